"""End-to-end test of the `cocogan serve` page in a real headless Chromium (Debian's package).

Playwright's Python package drives the system browser at /usr/bin/chromium; no browser is ever
downloaded. Without Chromium the tests skip with the command that installs it (.ci/run does).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000  # generous: CI machines are small and may be busy
TILES_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#layer img')];
  return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0 &&
    img.dataset.generation === String(window.cocogan.generation));
}"""

if not CHROMIUM.exists():
    pytest.skip(f"no browser at {CHROMIUM}: `apt-get install chromium` (Debian) to run the "
                "browser test (.ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright (the dev extra)")
uvicorn = pytest.importorskip("uvicorn", reason="cocogan serve needs the serve extra")

from cocogan.cli.serve import bind  # noqa: E402
from cocogan.serve.app import create_app, load_runs  # noqa: E402
from cocogan.serve.connections import server_config  # noqa: E402


@pytest.fixture(scope="module")
def url(trained_runs: dict[str, Path]) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, serving both runs."""
    runs = load_runs([trained_runs["tiny-inspired"], trained_runs["tiny-panorama"]])
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(server_config(create_app(runs)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (starting it is the slow part)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=FLAGS, timeout=TIMEOUT_MS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, url: str) -> Iterator[Page]:
    """A fresh page on the viewer; fails the test if the browser logged any error."""
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    wait_tiles(page)
    yield page
    context.close()
    assert not errors, f"browser console errors: {errors}"


def wait_tiles(page: Page) -> None:
    page.wait_for_function(TILES_LOADED)


def shot(page: Page) -> np.ndarray:
    png = page.locator("#viewer").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def tile_urls(page: Page) -> list[str]:
    return page.eval_on_selector_all("#layer img", "imgs => imgs.map((i) => i.src)")


def drag(page: Page, dx: int, dy: int = 0, steps: int = 12) -> None:
    box = page.locator("#viewer").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=steps)
    page.mouse.up()


def tile_boxes(page: Page) -> list[tuple[int, int, int]]:
    """(y, x, size) of every tile on the page."""
    def parse(url: str) -> tuple[int, int, int]:
        query = dict(part.split("=") for part in url.split("?")[1].split("&"))
        return int(query["y"]), int(query["x"]), int(query["size"])
    return [parse(u) for u in tile_urls(page)]


def test_the_page_opens_on_the_image_fitted_to_the_window(page: Page) -> None:
    """Issue 19, also seen: the view opens on the trained image, as large as the viewer
    allows, with no beyond-boundary tiles unless asked for (the run has extrapolate=0)."""
    run = page.evaluate("window.cocogan.run")
    viewer = page.locator("#viewer").bounding_box()
    zoom = page.evaluate("window.cocogan.zoom")
    shown_w, shown_h = run["width"] * zoom, run["height"] * zoom
    assert shown_w <= viewer["width"] and shown_h <= viewer["height"]
    zooms = page.evaluate("ZOOMS")
    bigger = zooms[zooms.index(zoom) + 1] if zoom != zooms[-1] else None
    assert bigger is None or run["width"] * bigger > viewer["width"] or \
        run["height"] * bigger > viewer["height"]  # the largest zoom that fits
    assert not page.is_checked("#beyond") and page.inner_text("#notice") == ""
    for y, x, size in tile_boxes(page):  # every tile lies inside the trained image
        assert y >= 0 and (y + 1) * size <= run["height"], (y, size)
        assert x >= 0 and (x + 1) * size <= run["width"], (x, size)
    page.check("#beyond")
    wait_tiles(page)
    assert "NOT fine-tuned" in page.inner_text("#notice")  # beyond tiles on screen now
    assert any(y < 0 or x < 0 for y, x, _ in tile_boxes(page))


def test_cartesian_viewer_seeds_interpolation_grid_and_zoom(page: Page) -> None:
    assert "tiny-inspired" in page.locator("#run").inner_text()
    page.check("#beyond")
    wait_tiles(page)
    assert "NOT fine-tuned" in page.locator("#notice").inner_text()  # beyond tiles on screen
    assert page.locator("#border").is_visible()
    first = shot(page)

    page.fill("#seed", "9")
    page.dispatch_event("#seed", "change")
    wait_tiles(page)
    assert all("seed=9" in u for u in tile_urls(page))
    nine = shot(page)
    assert np.abs(nine.astype(int) - first).mean() > 1  # another seed, another image

    page.fill("#blend", "0.5")  # halfway from seed 9 towards seed 1
    wait_tiles(page)
    assert all("seed2=1&t=0.5" in u for u in tile_urls(page))
    assert np.abs(shot(page).astype(int) - nine).mean() > 0.5
    page.fill("#blend", "0")
    page.click("#random")
    wait_tiles(page)
    assert page.input_value("#seed") != "9"

    page.check("#grid")
    assert page.locator("#grid-overlay").is_visible()
    zoom = page.inner_text("#zoom-value")
    page.click("#zoom-out")  # it opened at the largest zoom that fits
    wait_tiles(page)
    assert page.inner_text("#zoom-value") != zoom
    before = page.evaluate("window.cocogan.offsetX")
    drag(page, 90, 40)
    wait_tiles(page)
    assert page.evaluate("window.cocogan.offsetX") == before + 90


def test_panorama_turns_around_without_end(page: Page) -> None:
    page.select_option("#run", "1")
    wait_tiles(page)
    assert page.locator("#inspire").is_hidden()  # tiny-panorama trains without L_C
    status = page.inner_text("#status")
    assert "turn 0" in status
    # The dashed border's anti-aliasing follows the layer's offset: compare the pixels without it.
    page.add_style_tag(content="#border { display: none; }")
    start = shot(page)
    turn = page.evaluate("window.cocogan.run.width * window.cocogan.zoom")  # one turn, CSS px
    drag(page, -turn, steps=24)  # drag the panorama one full turn to the left
    wait_tiles(page)
    after = page.inner_text("#status")
    assert "turn 1" in after and after.split("view centre")[1][:6] == status.split(
        "view centre")[1][:6]
    assert np.array_equal(shot(page), start)  # 360 degrees later: the very same view
    drag(page, turn // 3, steps=8)  # 120 degrees back: a different view
    wait_tiles(page)
    assert np.abs(shot(page).astype(int) - start).mean() > 1


def test_inspire_from_an_uploaded_image(page: Page) -> None:
    assert page.locator("#inspire").is_visible()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    page.set_input_files("#upload", files=[{"name": "patch-source.png", "mimeType": "image/png",
                                            "buffer": buffer.getvalue()}])
    page.wait_for_function("document.getElementById('source').width > 0")
    page.click("#source", position={"x": 40, "y": 40})
    page.wait_for_function("!document.getElementById('back').disabled")
    wait_tiles(page)
    assert all("&z=" in u for u in tile_urls(page))
    assert page.locator("#picked").is_visible()
    assert "macro row" in page.inner_text("#inspire-note")
    page.click("#back")
    wait_tiles(page)
    assert all("seed=" in u for u in tile_urls(page))
