"""Fuzzing the command line's value parsers and the config loader (Hypothesis).

Whatever string or number a user types for ``--seeds``, ``--box``, ``--size``, ``--extend``,
``--set`` or puts in a ``--config`` YAML file, the command ends with exit code 0 or 2 and at most
one error line: never a traceback, never a hang (each case has a deadline; up-front budgets are
shrunk so that whatever passes them finishes quickly).

The default profile is deterministic and small (about 30 s); ``HYPOTHESIS_PROFILE=thorough``
explores far more cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocogan import budget
from cocogan.apps.io import MAX_SEED, MAX_SEEDS, parse_numbers, parse_seeds
from cocogan.cli import main
from cocogan.config import (
    FIELD_SECTION,
    SECTIONS,
    Config,
    ConfigError,
    OptimConfig,
    apply_overrides,
)
from test_generate_cli import save_run

settings.register_profile(
    "default", max_examples=15, derandomize=True, database=None,
    deadline=timedelta(seconds=30),  # a hang fails; a slow shared machine does not
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("thorough", parent=settings.get_profile("default"),
                          max_examples=500, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Numbers as users type them: huge, negative, fractional, exponents, non-finite.
NUMBER = st.one_of(
    st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "-", "0x10", "1e9", "1_000", " 3", "inf", "nan", "+1", "٣", "1e400"]))
LIST = st.lists(NUMBER, min_size=0, max_size=5).map(",".join)
TEXT = st.text(max_size=40)
VALUE = st.one_of(NUMBER, LIST, TEXT)
SEEDS = st.one_of(VALUE, st.tuples(NUMBER, NUMBER).map("-".join),
                  st.lists(st.tuples(NUMBER, NUMBER).map("-".join), max_size=3).map(",".join))
_counter = itertools.count()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(tmp_path_factory.mktemp("fuzz-runs"), "tiny")


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets of a tiny machine: anything accepted finishes in a moment."""
    monkeypatch.setattr(budget, "free_disk", lambda path: 300_000)
    monkeypatch.setattr(budget, "available_memory", lambda: 20_000_000)


def exits_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 0 or 2, at most one error line, no traceback."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    assert len([line for line in err.splitlines() if "error:" in line]) <= 1, (argv, err)
    if code == 2:
        assert "error:" in err, (argv, err)


# ---- the value parsers alone (fast, many cases) -------------------------------------------
@settings(max_examples=300)
@given(SEEDS)
def test_parse_seeds_returns_valid_seeds_or_a_value_error(text: str) -> None:
    try:
        seeds = parse_seeds(text)
    except ValueError as error:
        assert str(error).startswith("--seeds")
        return
    assert 0 < len(seeds) <= MAX_SEEDS and len(set(seeds)) == len(seeds)
    assert all(isinstance(s, int) and 0 <= s <= MAX_SEED for s in seeds)


@settings(max_examples=300)
@given(VALUE, st.sampled_from([int, float]))
def test_parse_numbers_returns_numbers_or_a_value_error(text: str, kind: type) -> None:
    try:
        values = parse_numbers(text, "--box", (2, 4), kind)
    except ValueError as error:
        assert str(error).startswith("--box")
        return
    assert len(values) in (2, 4) and all(isinstance(v, kind) for v in values)


KEYS = st.one_of(
    st.sampled_from([f"{section}.{f.name}" for section, kind in SECTIONS.items()
                     for f in dataclasses.fields(kind)] + [f"train.{f}" for f in FIELD_SECTION]),
    st.sampled_from(["lr_g", "batch", "model.", ".x", "train", "=", "model.micro.x"]),
    TEXT)


@settings(max_examples=300)
@given(KEYS, VALUE)
def test_set_overrides_validate_or_raise_config_error(key: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        apply_overrides(Config(), [f"{key}={value}"]).validate()


YAML_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                        TEXT)
YAML_TREE = st.recursive(
    YAML_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(TEXT, st.integers()), inner, max_size=4)),
    max_leaves=12)
CONFIG_LIKE = st.fixed_dictionaries({}, optional={
    "name": YAML_TREE,
    "model": st.one_of(YAML_TREE, st.dictionaries(st.sampled_from(list(vars(Config().model))),
                                                  YAML_TREE, max_size=4)),
    "train": st.one_of(YAML_TREE, st.dictionaries(st.sampled_from(list(FIELD_SECTION)),
                                                  YAML_TREE, max_size=4)),
    "optim": st.one_of(YAML_TREE, st.dictionaries(st.sampled_from(list(vars(OptimConfig()))),
                                                  YAML_TREE, max_size=4)),
})


@settings(max_examples=300)
@given(st.one_of(TEXT, YAML_TREE.map(yaml.safe_dump), CONFIG_LIKE.map(yaml.safe_dump)))
def test_yaml_documents_load_or_raise_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        Config.from_yaml(text).validate()


# ---- the whole command line ---------------------------------------------------------------
@given(SEEDS)
def test_generate_full_seeds(run: Path, tmp_path: Path, small_machine: None,
                             capsys: pytest.CaptureFixture[str], text: str) -> None:
    exits_cleanly(["generate", "full", "--run", str(run), "--out", str(tmp_path / "full"),
                   f"--seeds={text}"], capsys)


@given(VALUE)
def test_generate_viewport_box(run: Path, tmp_path: Path, small_machine: None,
                               capsys: pytest.CaptureFixture[str], text: str) -> None:
    exits_cleanly(["generate", "viewport", "--run", str(run), "--out", str(tmp_path / "view"),
                   f"--box={text}"], capsys)


@given(VALUE)
def test_generate_beyond_extend(run: Path, tmp_path: Path, small_machine: None,
                                capsys: pytest.CaptureFixture[str], text: str) -> None:
    exits_cleanly(["generate", "beyond", "--run", str(run), "--out", str(tmp_path / "beyond"),
                   "--seeds", "0", f"--extend={text}"], capsys)


@given(VALUE, st.sampled_from([".tif", ".png"]))
def test_generate_huge_size(run: Path, tmp_path: Path, small_machine: None,
                            capsys: pytest.CaptureFixture[str], text: str, suffix: str) -> None:
    exits_cleanly(["generate", "huge", "--run", str(run), "--no-progress", f"--size={text}",
                   "--output", str(tmp_path / f"huge{suffix}")], capsys)


@settings(max_examples=40)
@given(st.lists(st.tuples(KEYS, VALUE).map("=".join), min_size=1, max_size=3))
def test_train_set(tmp_path: Path, capsys: pytest.CaptureFixture[str], items: list[str]) -> None:
    exits_cleanly(["train", "--preset", "tiny", "--data", "builtin:blobs", "--dry-run",
                   "--out", str(tmp_path / f"run{next(_counter)}"), "--set", *items], capsys)


@settings(max_examples=40)
@given(st.one_of(TEXT, YAML_TREE.map(yaml.safe_dump), CONFIG_LIKE.map(yaml.safe_dump)))
def test_train_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           text: str) -> None:
    path = tmp_path / f"config{next(_counter)}.yaml"
    path.write_text(text)
    exits_cleanly(["train", "--config", str(path), "--data", "builtin:blobs", "--dry-run",
                   "--out", str(tmp_path / f"run{next(_counter)}")], capsys)
