"""Shared fixtures: the real emoji image set and small seeded models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

EMOJI_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emoji-noto-64"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow run only with --runslow (the default suite must stay fast)."""
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def emoji_dir() -> Path:
    if not EMOJI_DIR.is_dir():
        pytest.skip(f"real image set not found at {EMOJI_DIR}")
    return EMOJI_DIR


@pytest.fixture(scope="session")
def emoji_image(emoji_dir: Path) -> torch.Tensor:
    """One real 64x64 image composited onto white, (1, 3, 64, 64) in [-1, 1]."""
    rgba = Image.open(sorted(emoji_dir.glob("*.png"))[100]).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1.0


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories trained for a few steps on built-in data: a Cartesian run with the
    content loss (tiny-inspired on blobs) and a cylindrical one (tiny-panorama on skyline)."""
    from cocogan.cli import main

    root = tmp_path_factory.mktemp("trained")
    runs = {"tiny-inspired": "builtin:blobs", "tiny-panorama": "builtin:skyline"}
    for preset, data in runs.items():
        code = main(["train", "--preset", preset, "--data", data, "--steps", "3",
                     "--out", str(root / preset), "--device", "cpu"])
        assert code == 0, f"training {preset} failed"
    return {preset: root / preset for preset in runs}
