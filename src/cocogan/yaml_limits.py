"""Bounds of every config text (YAML files, --set values, run files, a checkpoint's config, a
shipped card) and of every user-given text echoed in a message. A real config is ~2 KB, ~60
nodes and 3 levels deep; a 400-byte "billion laughs" YAML expands to ~10^9 nodes, and deep
nesting overflows the recursive YAML composer and JSON decoder."""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1 << 20  # a config file or text
MAX_CONFIG_NODES = 10_000  # YAML nodes after expanding aliases
MAX_CONFIG_DEPTH = 32  # nested mappings/lists
MAX_STRING = 1_000  # characters of a string config value
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = _SHOW.maxset = 4
_SHOW.maxlevel = 2
# ANSI escape sequences (CSI ... final byte, OSC ... BEL/ST) and every other control character
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                      r"|[\x00-\x1f\x7f-\x9f]")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


class YAMLLimitError(ConfigError, yaml.YAMLError):
    """A YAML text beyond the bounds of a config (size, nesting, alias expansion)."""


def show(value: Any) -> str:
    """repr of a user-given value, cut to ~80 characters (a --set once printed a 351 MB line)."""
    return _SHOW.repr(value)


def cut(text: str, limit: int = 80) -> str:
    """``text`` without control characters and ANSI escapes, cut to ``limit`` ("..." marks it)."""
    text = _CONTROL.sub("", str(text))
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def names(items: Any, shown: int = 6) -> str:
    """'a, b, c' of the first `shown` sorted names, each cut short."""
    items = sorted(items)
    return ", ".join(cut(n) for n in items[:shown]) + (", ..." if len(items) > shown else "")


def read_bounded(path: Path, what: str) -> str:
    """A config-sized UTF-8 text file, its size checked before it is read (ConfigError)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is {size} bytes; a config is a few KB (at most "
                          f"{MAX_CONFIG_BYTES})")
    with open(path, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)  # the file may grow after the check
    try:
        return data[:MAX_CONFIG_BYTES].decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({error.reason})") from None


def load_yaml(text: str, what: str) -> Any:
    """`yaml.safe_load` within MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH and MAX_CONFIG_NODES (aliases
    expanded), checked on the parser's event stream before anything is composed: a billion
    laughs costs microseconds. `what` names the text ("--set model.ngf"). Raises YAMLLimitError
    beyond a bound, ConfigError when not YAML."""
    if len(text) > MAX_CONFIG_BYTES:
        raise YAMLLimitError(f"{what} is {len(text)} characters, more than a config's "
                             f"{MAX_CONFIG_BYTES}: pass a config file of section: key lines")
    sizes: dict[str, int] = {}  # anchor -> expanded node count of what it names
    open_nodes: list[list[Any]] = [[None, 0]]  # [anchor, expanded nodes] per open collection
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                open_nodes.append([event.anchor, 1])
                if len(open_nodes) > MAX_CONFIG_DEPTH + 1:
                    raise YAMLLimitError(f"{what} nests more than {MAX_CONFIG_DEPTH} levels "
                                         "deep; a config has sections of key: value lines")
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = open_nodes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                anchor, size = None, sizes.get(event.anchor, 1)
            else:
                continue
            if anchor is not None:
                sizes[anchor] = size
            open_nodes[-1][1] += size  # the outermost entry counts the whole text
            if open_nodes[-1][1] > MAX_CONFIG_NODES:
                raise YAMLLimitError(f"{what} expands to more than {MAX_CONFIG_NODES} values "
                                     "(YAML aliases repeating aliases, a 'billion laughs'): "
                                     "refused")
        return yaml.safe_load(text)
    except YAMLLimitError:
        raise
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} is not valid YAML: {str(error).splitlines()[0]}") from None


def read_yaml_file(path: Path, what: str) -> Any:
    """:func:`load_yaml` of a file read by :func:`read_bounded`."""
    return load_yaml(read_bounded(path, what), f"{what} {path}")


def check_depth(data: Any, what: str) -> None:
    """Raise ConfigError when nested lists/dicts go deeper than MAX_CONFIG_DEPTH (iterative)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"{what} nests more than {MAX_CONFIG_DEPTH} levels deep")
            stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
