"""How closely patch-inspired generation follows the patch it was given, per model.

For held-out images, the macro patch at each of a few positions is handed to ``inspire``; two
figures per position: how often D's spatial head names the true position, and the mean squared
error (images in [-1, 1]) between the given patch and the inspired image's patch at that true
position. Beside it, the same error for images from random z (what the patch alone does not
explain): an inspired error well below it means Q's z carries the patch's content.

    python -m benchmarks.inspire_fidelity emoji32-v3 emoji32-v4 RUN/checkpoints/step-N.safetensors \
        --data ../shared/data/emoji-noto-64::holdout --n 256
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from cocogan.apps.full import full_images
from cocogan.apps.inspire import inspire, macro_size
from cocogan.checkpoint import load_model
from cocogan.cli import explain
from cocogan.data import build_dataset
from cocogan.model import CocoGAN
from cocogan.patches import crop


def positions(model: CocoGAN) -> list[tuple[int, int]]:
    """The macro positions (top, left) in pixels on a grid of half-macro steps."""
    m = model.config
    height, width = macro_size(model)
    return [(top, left) for top in range(0, m.full_height - height + 1, height // 2)
            for left in range(0, m.full_width - width + 1, width // 2)]


def fidelity(model: CocoGAN, images: torch.Tensor) -> list[dict[str, float]]:
    """Per position: position accuracy, inspired MSE and random-z MSE over ``images``."""
    count, size, wrap = images.shape[0], macro_size(model), model.coords.cyclic
    random_full = full_images(model, model.sample_z(count, torch.Generator().manual_seed(1)))
    rows = []
    for top, left in positions(model):
        at = torch.full((count,), top), torch.full((count,), left)
        patches = crop(images, *at, *size, wrap=wrap)  # (B, 3, Mh, Mw), all images at once
        result = inspire(model, patches)
        inspired, random = (crop(full.cpu(), *at, *size, wrap=wrap) for full in
                            (result.full, random_full))
        hit = (result.top == top) & (result.left == left)
        rows.append({"top": top, "left": left, "position_accuracy": hit.float().mean().item(),
                     "mse_inspired": (inspired - patches).square().mean().item(),
                     "mse_random_z": (random - patches).square().mean().item()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="shipped names, runs or .safetensors files")
    parser.add_argument("--data", required=True, help="held-out images (e.g. DIR::holdout)")
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {}
    for name in args.models:
        _, model, _ = load_model(name)
        m = model.config
        dataset = build_dataset(args.data, m.full_height, m.full_width)
        images = torch.stack([dataset[i] for i in range(min(args.n, len(dataset)))])
        rows = fidelity(model, images)
        report[name] = rows
        mean = {k: sum(r[k] for r in rows) / len(rows)
                for k in ("position_accuracy", "mse_inspired", "mse_random_z")}
        print(f"{name}: " + "  ".join(f"{k} {v:.3f}" for k, v in mean.items()))
        for r in rows:
            print(f"  ({r['top']:>2},{r['left']:>2})  position {r['position_accuracy']:.3f}  "
                  f"inspired {r['mse_inspired']:.3f}  random z {r['mse_random_z']:.3f}")
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # bad model or data names: one line, as the cocogan command does
        if (message := explain(error)) is None:
            raise
        sys.exit(f"inspire_fidelity: error: {message}")
