"""Imports flow one way (docs/design.md, "Layers"): each module of src/cocogan imports only
modules of its own layer or below, top-level and function-level imports alike (read from the
source with ast, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
# subpackage or top-level module -> layer; a module may import its own layer and lower ones
LAYERS: dict[str, int] = {
    "yaml_limits": 0, "outputs": 0, "plotting": 0, "version": 0,
    "config": 1,
    "coords": 2, "patches": 2, "presets": 2, "data": 2, "shipped": 2,
    "nn": 3, "variants": 3,
    "model": 4, "losses": 4, "loss_variants": 4, "budget": 4, "render": 4, "summary": 4,
    "checkpoint": 5,
    "apps": 6, "metrics": 6, "export": 6,
    "training": 7,
    "evaluation": 8, "serve": 8,
    "cli": 9, "__main__": 9,
}


def part(module: str) -> str | None:
    """The LAYERS key of ``cocogan.X...``; None for the package root (its public surface and
    __version__, importable from anywhere)."""
    names = module.split(".")
    return names[1] if names[0] == "cocogan" and len(names) > 1 else None


def imports(file: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "cocogan":  # from cocogan import shipped
                found |= {f"cocogan.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "cocogan"}


def test_imports_flow_from_lower_layers_only() -> None:
    wrong = []
    files = sorted((SOURCE / "cocogan").rglob("*.py"))
    for file in files:
        module = ".".join(file.relative_to(SOURCE).with_suffix("").parts)
        own = part(module)
        if own is None or own == "__init__":
            continue
        assert own in LAYERS, f"{module}: add its layer to LAYERS and docs/design.md"
        for name in imports(file):
            other = part(name)
            if other in LAYERS and LAYERS[other] > LAYERS[own]:
                wrong.append(f"{module} (layer {LAYERS[own]}) imports {name} "
                             f"(layer {LAYERS[other]})")
    assert len(files) > 50 and not wrong, "\n".join(wrong)
