"""Regenerate the README's and the docs' pictures from the shipped models (`cocogan models`).

    .venv/bin/python scripts/pictures.py            # all of them, into docs/images/
    .venv/bin/python scripts/pictures.py --no-browser   # without the viewer screenshot

Writes, for each shipped model, ``docs/images/shipped-NAME.png``: generated full images (fixed
seeds 0..) above real ones (the held-out side of the model's data when that folder is here, the
built-in held-out seed for built-in data), 4x enlarged with nearest neighbours so every pixel
shows; for panoramas each image is pasted twice side by side (0-720 degrees, so the 360-degree
join sits in the middle). For a model shipped with D, ``docs/images/inspire-NAME.png``: held-out
images, their centre macro patch, and the images patch-inspired generation draws from it.
Then ``docs/images/serve.png``: the browser viewer (`cocogan serve`, headless Debian Chromium
driven by playwright, the dev extra) on the shipped models.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from cocogan.apps.full import full_images
from cocogan.apps.inspire import crop_patch, inspire, macro_size
from cocogan.apps.io import image_grid, save_png
from cocogan.checkpoint import load_model
from cocogan.cli.demo import HELD_OUT_SEED, enlarge
from cocogan.data import BuiltinDataset, DataError, build_dataset
from cocogan.data.split import parse_split
from cocogan.shipped import models as shipped_models

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
SCALE = 4
CHROMIUM = "/usr/bin/chromium"


def real_images(data: str, height: int, width: int, count: int) -> torch.Tensor | None:
    """``count`` real images never trained on, or None when the data is not on this machine."""
    if data.startswith("builtin:"):
        dataset = BuiltinDataset(data.removeprefix("builtin:"), height, width, seed=HELD_OUT_SEED)
    else:
        try:
            dataset = build_dataset(parse_split(data)[0] + "::holdout", height, width)
        except DataError:
            return None
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    return torch.stack([dataset[int(i)] for i in order[:count]])


def model_picture(entry, out: Path) -> Path:
    """Generated above real for one shipped model; returns the file written."""
    _, model, _ = load_model(entry.path)
    m, cyclic = model.config, model.coords.cyclic
    count, columns = (6, 2) if cyclic else (24, 8)
    fake = full_images(model, model.sample_z(count, torch.Generator().manual_seed(0)))
    real = real_images(entry.card["data"], m.full_height, m.full_width, count // 2 if cyclic
                       else count // 3)
    if cyclic:
        fake = torch.cat([fake, fake], dim=-1)
        real = None if real is None else torch.cat([real, real], dim=-1)
    rows = [image_grid(fake, columns)]
    if real is not None:
        rows.append(image_grid(real, columns))
    grid = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, 4), value=1.0) for r in rows],
                     dim=-2)[..., :-4, :]
    grid = enlarge(grid, SCALE)
    path = out / f"shipped-{entry.name}.png"
    save_png(path, grid)
    return path


def inspire_picture(entry, out: Path, count: int = 8) -> Path | None:
    """For a model shipped with D: held-out images (top row), the centre macro patch cut from
    each (middle) and the image D's estimate of that patch's z and position inspired (bottom),
    as `cocogan generate inspire --image FILE --box TOP,LEFT` draws it."""
    if "inspire" not in entry.card["applications"]:
        return None
    _, model, _ = load_model(entry.path)
    m = model.config
    real = real_images(entry.card["data"], m.full_height, m.full_width, count)
    if real is None:
        return None
    height, width = macro_size(model)
    top, left = (m.full_height - height) // 2, (m.full_width - width) // 2
    patches = torch.stack([crop_patch(model, image, top, left) for image in real])
    shown = torch.ones_like(real)
    shown[..., top:top + height, left:left + width] = patches
    rows = [image_grid(x, count) for x in (real, shown, inspire(model, patches).full)]
    grid = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, 4), value=1.0) for r in rows],
                     dim=-2)[..., :-4, :]
    path = out / f"inspire-{entry.name}.png"
    save_png(path, enlarge(grid, SCALE))
    return path


def viewer_screenshot(out: Path) -> Path:
    """docs/images/serve.png: the viewer on the shipped models, once every tile has loaded."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    from cocogan.cli.serve import bind
    from cocogan.serve.app import create_app, load_runs
    from cocogan.serve.connections import server_config

    runs = load_runs([entry.name for entry in shipped_models()])
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(server_config(create_app(runs)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    path = out / "serve.png"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")
            page.wait_for_function("() => [...document.querySelectorAll('#layer img')]"
                                   ".every((i) => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(path))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    Image.open(path).convert("RGB").save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=IMAGES)
    parser.add_argument("--no-browser", action="store_true", help="skip the viewer screenshot")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    entries = shipped_models()
    if not entries:
        print("no shipped models: nothing to draw", file=sys.stderr)
        return 1
    for entry in entries:
        print(model_picture(entry, args.out))
        inspired = inspire_picture(entry, args.out)
        if inspired is not None:
            print(inspired)
    if not args.no_browser:
        print(viewer_screenshot(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
