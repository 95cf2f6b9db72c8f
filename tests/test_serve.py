"""API tests of `cocogan serve` (in-process ASGI client) on runs trained for a few steps."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="cocogan serve needs the serve extra (starlette)")
httpx = pytest.importorskip("httpx", reason="the API tests need httpx")
uvicorn = pytest.importorskip("uvicorn", reason="cocogan serve needs the serve extra")

from cocogan.apps import viewport  # noqa: E402
from cocogan.apps.io import load_image, to_uint8  # noqa: E402
from cocogan.apps.viewport import PixelBox  # noqa: E402
from cocogan.cli import main  # noqa: E402
from cocogan.cli.serve import bind  # noqa: E402
from cocogan.coords import CoordinateSystem  # noqa: E402
from cocogan.data import imaging  # noqa: E402
from cocogan.render import latents  # noqa: E402
from cocogan.serve.app import (  # noqa: E402
    MAX_UPLOAD_BYTES,
    MAX_UPLOADS,
    _decode_upload,
    create_app,
    load_runs,
)
from cocogan.serve.connections import server_config  # noqa: E402
from cocogan.serve.guard import host_rule  # noqa: E402
from cocogan.serve.tiles import LRUCache, default_tile, seed_latent, tile_box  # noqa: E402


def serve_runs(paths: list[Path], **options: int) -> tuple:
    """(app, served runs) for run directories; options go to load_runs."""
    runs = load_runs(paths, **{"cache_bytes": 1 << 20, "max_queued": 1 << 16, **options})
    return create_app(runs), runs


@pytest.fixture(scope="module")
def served(trained_runs: dict[str, Path]) -> tuple:
    return serve_runs([trained_runs["tiny-inspired"], trained_runs["tiny-panorama"]])


BASE = "http://127.0.0.1:8000"  # the Host the guard expects (cocogan.serve.guard)
UPLOAD = {"Content-Type": "application/octet-stream"}  # what the page sends with an upload


def fetch(app, *paths: str, method: str = "GET", **kwargs) -> list[httpx.Response]:
    """Send the requests concurrently to the app (one event loop, like a browser's tiles)."""
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await asyncio.gather(*(client.request(method, p, **kwargs) for p in paths))
    return asyncio.run(go())


def get(app, path: str, **kwargs) -> httpx.Response:
    return fetch(app, path, **kwargs)[0]


def pixels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


def png_file(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_runs_are_described(served: tuple) -> None:
    runs = get(served[0], "/api/runs").json()
    assert [r["preset"] for r in runs] == ["tiny-inspired", "tiny-panorama"]
    cart, pano = runs
    assert (cart["height"], cart["width"], cart["micro"], cart["cyclic"]) == (32, 32, 8, False)
    assert (pano["height"], pano["width"], pano["cyclic"]) == (32, 96, True)
    assert cart["content_loss"] and not pano["content_loss"]
    assert cart["extrapolate"] == 0 and cart["step"] == 3
    assert pano["width"] % pano["tile"] == 0  # a turn is a whole number of tiles
    page = get(served[0], "/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http" not in get(served[0], "/static/app.js").text
    assert all(not r["name"].startswith("/") and str(Path.cwd()) not in r["name"]
               and r["name"].endswith(p) for r, p in zip(runs, ("tiny-inspired",
                                                               "tiny-panorama"), strict=True))


@pytest.mark.parametrize(("grid", "micro", "tile"),
                         [((4, 4), 8, 32), ((4, 12), 8, 32), ((4, 12), 64, 256),
                          ((6, 9), 16, 48), ((64, 64), 8, 256), ((3, 5), 300, 300)])
def test_default_tile_divides_the_image(grid: tuple, micro: int, tile: int) -> None:
    coords = CoordinateSystem(*grid, 2, 2, micro)
    assert default_tile(coords) == tile


def test_tiles_are_exact_crops_of_generate_full(served: tuple, trained_runs: dict,
                                                tmp_path: Path) -> None:
    app = served[0]
    run = trained_runs["tiny-inspired"]
    assert main(["generate", "full", "--run", str(run), "--seeds", "5", "--out",
                 str(tmp_path), "--device", "cpu"]) == 0
    full = png_file(tmp_path / "seed0005.png")
    for y in range(2):
        for x in range(2):
            tile = pixels(get(app, f"/api/runs/0/tile?y={y}&x={x}&size=16&seed=5"))
            assert np.abs(tile - full[16 * y:16 * y + 16, 16 * x:16 * x + 16]).max() <= 1
    whole = pixels(get(app, "/api/runs/0/tile?y=0&x=0&seed=5"))  # default size: the image
    assert whole.shape == (32, 32, 3) and np.abs(whole - full).max() <= 1


def test_tiles_beyond_the_border_are_crops_of_generate_huge(served: tuple, trained_runs: dict,
                                                            tmp_path: Path) -> None:
    app = served[0]
    out = tmp_path / "huge.png"
    assert main(["generate", "huge", "--run", str(trained_runs["tiny-inspired"]), "--seed", "2",
                 "--size", "64", "--tile", "16", "--output", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    huge = png_file(out)  # the trained image centred: pixel (0, 0) of the image is huge[16, 16]
    for y, x in [(-1, -1), (-1, 2), (2, 0), (0, -1), (1, 1)]:
        tile = pixels(get(app, f"/api/runs/0/tile?y={y}&x={x}&size=16&seed=2"))
        want = huge[16 + 16 * y:32 + 16 * y, 16 + 16 * x:32 + 16 * x]
        assert np.abs(tile - want).max() <= 1, (y, x)


def test_panorama_tiles_wrap_across_360_degrees(served: tuple, trained_runs: dict,
                                                tmp_path: Path) -> None:
    app, runs = served
    assert main(["generate", "panorama", "--run", str(trained_runs["tiny-panorama"]),
                 "--seeds", "4", "--out", str(tmp_path), "--device", "cpu"]) == 0
    full = png_file(tmp_path / "panorama-seed0004.png")  # (32, 96)
    tiles = [pixels(get(app, f"/api/runs/1/tile?y=0&x={x}&seed=4")) for x in range(-3, 6)]
    for x, tile in zip(range(-3, 6), tiles, strict=True):
        col = x % 3
        assert np.abs(tile - full[:, 32 * col:32 * col + 32]).max() <= 1
        assert np.array_equal(tile, tiles[col + 3])  # one turn later: the very same tile
    # A tile that straddles the seam (size 64 at x=1: columns 64..127 -> 64..95, 0..31; its
    # lower half is beyond the bottom border).
    seam = pixels(get(app, "/api/runs/1/tile?y=0&x=1&size=64&seed=4"))[:32]
    assert np.abs(seam - np.concatenate([full[:, 64:], full[:, :32]], axis=1)).max() <= 1
    assert runs[1].renderer.stats.hits >= 6  # the wrapped tiles came from the cache


def test_seed_interpolation_and_explicit_latent(served: tuple) -> None:
    app = served[0]
    base = "/api/runs/0/tile?y=0&x=0"
    a, b = pixels(get(app, f"{base}&seed=1")), pixels(get(app, f"{base}&seed=2"))
    assert np.abs(a - b).mean() > 1  # another seed is another image
    assert np.array_equal(pixels(get(app, f"{base}&seed=1&seed2=2&t=0")), a)
    end = pixels(get(app, f"{base}&seed=1&seed2=2&t=1"))
    assert np.abs(end - b).max() <= 1  # slerp ends exactly at seed2
    middle = pixels(get(app, f"{base}&seed=1&seed2=2&t=0.5"))
    assert np.abs(middle - a).mean() > 0.5 and np.abs(middle - b).mean() > 0.5
    z = latents([1], 32)[0].numpy().astype("<f4").tobytes()
    sent = base64.urlsafe_b64encode(z).decode().rstrip("=")
    assert np.abs(pixels(get(app, f"{base}&z={sent}")) - a).max() <= 1


@pytest.mark.parametrize(("query", "status", "words"), [
    ("y=a&x=0", 400, "not an integer"),
    ("x=0", 400, "missing parameter y"),
    ("y=0&x=0&size=12", 400, "multiple of the 8-pixel"),
    ("y=0&x=0&size=1024", 400, "between 8 and 512"),
    ("y=0&x=9999&seed=1", 400, "within 256 micro patches"),
    ("y=-9999&x=0", 400, "within 256 micro patches"),
    ("y=0&x=0&seed=-3", 400, "seed=-3"),
    ("y=0&x=0&seed=99999999999", 400, "seed=99999999999"),
    ("y=0&x=0&seed=1&t=0.5", 400, "t needs seed2"),
    ("y=0&x=0&seed=1&seed2=3&t=nan", 400, "must be finite"),
    ("y=0&x=0&seed=1&seed2=3&t=1.5", 400, "must be in [0, 1]"),
    ("y=0&x=0&z=AAAA", 400, "32 float32 values"),
    ("y=0&x=0&z=!!", 400, "base64url"),
    ("y=0&x=0&z=AAAA&seed=1", 400, "either z or seed"),
    ("y=0&x=0&path=/etc/passwd", 400, "unknown parameter(s) path"),
])
def test_bad_tile_requests_get_clear_4xx(served: tuple, query: str, status: int,
                                         words: str) -> None:
    response = get(served[0], f"/api/runs/0/tile?{query}")
    assert response.status_code == status
    assert words in response.json()["error"]


def test_bad_latent_values_and_unknown_run(served: tuple) -> None:
    app = served[0]
    z = np.full(32, np.inf, dtype="<f4").tobytes()
    sent = base64.urlsafe_b64encode(z).decode()
    assert "finite" in get(app, f"/api/runs/0/tile?y=0&x=0&z={sent}").json()["error"]
    missing = get(app, "/api/runs/7/tile?y=0&x=0")
    assert missing.status_code == 404 and "runs 0..1" in missing.json()["error"]
    assert get(app, "/static/../app.py").status_code == 404
    assert get(app, "/api/runs/0/tile?y=0&x=0", method="POST", headers=UPLOAD).status_code == 405


def test_cache_headers_etag_and_not_modified(served: tuple) -> None:
    app = served[0]
    first = get(app, "/api/runs/0/tile?y=1&x=-1&seed=11")
    assert first.headers["cache-control"].startswith("private, max-age=")
    etag = first.headers["etag"]
    again = get(app, "/api/runs/0/tile?y=1&x=-1&seed=11", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    other = get(app, "/api/runs/0/tile?y=1&x=-1&seed=12")
    assert other.headers["etag"] != etag


def test_lru_cache_is_bounded_and_evicts_least_recently_used() -> None:
    cache = LRUCache(max_bytes=10)
    for key in "abc":
        cache.put((key,), b"xxx")  # 9 bytes
    assert cache.get(("a",)) == b"xxx"  # a is now the most recent
    cache.put(("d",), b"xxx")  # 12 > 10: evicts b, the least recent
    assert cache.get(("b",)) is None and cache.get(("a",)) == b"xxx"
    assert cache.bytes == 9 and len(cache) == 3
    cache.put(("big",), b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get(("big",)) is None and cache.bytes <= cache.max_bytes


def test_concurrent_tiles_are_batched_into_few_forward_passes(trained_runs: dict) -> None:
    app, runs = serve_runs([trained_runs["tiny-inspired"]])
    paths = [f"/api/runs/0/tile?y={y}&x={x}&size=16&seed=3"
             for y in range(-2, 4) for x in range(-2, 4)]  # 36 tiles, 144 micro patches
    together = fetch(app, *paths)
    stats = runs[0].renderer.stats
    assert all(r.status_code == 200 for r in together)
    assert stats.tiles == 36 and stats.batches <= 3 and stats.passes <= 3
    # Batching does not change the pixels: one tile at a time gives the same tiles.
    alone_app, _ = serve_runs([trained_runs["tiny-inspired"]])
    for path, response in zip(paths[::7], together[::7], strict=True):
        assert np.abs(pixels(get(alone_app, path)) - pixels(response)).max() <= 1


def test_a_step_renders_at_most_chunk_patches(trained_runs: dict) -> None:
    app, runs = serve_runs([trained_runs["tiny-inspired"]], chunk=16)
    paths = [f"/api/runs/0/tile?y=0&x={x}&size=16&seed=4" for x in range(12)]  # 4 patches each
    assert all(r.status_code == 200 for r in fetch(app, *paths))
    stats = runs[0].renderer.stats
    assert stats.tiles == 12 and stats.batches >= 3 and stats.peak_step <= 16


def test_too_many_queued_tiles_get_503(trained_runs: dict) -> None:
    app, _ = serve_runs([trained_runs["tiny-inspired"]], max_queued=2)  # 8-px tiles: 1 patch
    responses = fetch(app, *(f"/api/runs/0/tile?y=0&x={x}&size=8&seed=1" for x in range(8)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 2 and 503 in codes
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "queued" in busy.json()["error"]


def test_cache_memory_stays_under_its_bound(trained_runs: dict) -> None:
    app, runs = serve_runs([trained_runs["tiny-inspired"]], cache_bytes=4000)
    for x in range(-6, 6):
        assert get(app, f"/api/runs/0/tile?y=0&x={x}&seed=8").status_code == 200
    cache = runs[0].renderer.cache
    assert 0 < cache.bytes <= 4000 and len(cache) < 12


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_inspire_estimates_a_latent_that_renders(served: tuple) -> None:
    app, runs = served
    model = runs[0].model
    # An image generated by the run itself, uploaded at twice its size (the server resizes).
    image = Image.fromarray(np.repeat(np.repeat(to_uint8(
        viewport(model, latents([6], 32), PixelBox(0, 0, 32, 32))[0]), 2, 0), 2, 1))
    response = get(app, "/api/runs/0/inspire?top=8&left=16", method="POST",
                   content=image_bytes(image, "JPEG"), headers=UPLOAD)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["warning"] is None  # tiny-inspired trains with the content loss
    assert 0 <= result["row"] < model.coords.macro_rows
    assert (result["top"], result["left"]) == (result["row"] * 8, result["col"] * 8)
    tile = pixels(get(app, f"/api/runs/0/tile?y=0&x=0&z={result['z']}"))
    z = torch.frombuffer(bytearray(base64.urlsafe_b64decode(result["z"] + "==")),
                         dtype=torch.float32)
    want = to_uint8(viewport(model, z[None], PixelBox(0, 0, 32, 32))[0])
    assert np.abs(tile - want).max() <= 1


def test_inspire_rejects_bad_uploads(served: tuple) -> None:
    app = served[0]
    url = "/api/runs/0/inspire?top=0&left=0"
    small = image_bytes(Image.new("RGB", (32, 32), (10, 200, 30)))
    cases = [
        (b"", 400, "empty body"),
        (b"not an image at all", 415, "not a readable image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", 415, "not a readable image"),
        (image_bytes(Image.new("1", (5000, 5000))), 413, "too large"),
        (b"x" * (MAX_UPLOAD_BYTES + 1), 413, "larger than 4 MiB"),
    ]
    for body, status, words in cases:
        response = get(app, url, method="POST", content=body, headers=UPLOAD)
        assert response.status_code == status and words in response.json()["error"], body[:20]
    outside = get(app, "/api/runs/0/inspire?top=24&left=0", method="POST", content=small,
                  headers=UPLOAD)
    assert outside.status_code == 400 and "top=24 must be an integer in [0, 16]" in \
        outside.json()["error"]
    assert get(app, "/api/runs/0/inspire?top=x&left=0", method="POST",
               content=small, headers=UPLOAD).status_code == 400


def test_serve_cli_errors_are_one_line(trained_runs: dict, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--run", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    held = bind("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        with pytest.raises(ValueError, match="pick another --port"):
            bind("127.0.0.1", port)
    finally:
        held.close()
    assert main(["serve", "--run", str(trained_runs["tiny-panorama"]), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", "--run", str(trained_runs["tiny-panorama"]), "--max-queue", "0"]) == 2
    assert "--max-queue must be >= 1" in capsys.readouterr().err


def test_serve_command_prints_the_url_and_serves(trained_runs: dict) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = "import sys; from cocogan.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", command, "serve", "--run", str(trained_runs["tiny-panorama"]),
         "--port", "0", "--device", "cpu", "--allow-host", "viewer.test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("cocogan serve: 1 run(s) at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/runs", timeout=30) as response:
            assert b'"tiny-panorama"' in response.read()
        with urllib.request.urlopen(url + "api/runs/0/tile?y=0&x=5&seed=1", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/png"
        named = urllib.request.Request(url + "api/runs", headers={"Host": "viewer.test"})
        with urllib.request.urlopen(named, timeout=30) as response:  # --allow-host viewer.test
            assert response.status == 200
        other = urllib.request.Request(url + "api/runs", headers={"Host": "other.test"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(other, timeout=30)
        assert refused.value.code == 400
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---- hostile and unlucky clients (docs/reliability.md, "serve") ------------------------------
@contextlib.contextmanager
def real_server(app, **options) -> Iterator[tuple[str, int]]:
    """A real uvicorn server on a free loopback port, configured as `cocogan serve` does."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(server_config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def raw_request(address: tuple[str, int], target: str) -> socket.socket:
    """A socket that has sent a GET for ``target`` (closing it is a real disconnect)."""
    sock = socket.create_connection(address, timeout=30)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\n\r\n".encode())
    return sock


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """True if the server closes ``sock`` within the time (recv returns b"")."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_abandoned_tiles_are_dropped_and_small_tiles_go_first(trained_runs: dict) -> None:
    """Issue 19.3: big tiles of clients that left are not rendered; a small tile arriving behind
    big ones waits for one step, not for all of them."""
    (run,) = load_runs([trained_runs["tiny-inspired"]], cache_bytes=0, chunk=32)
    renderer, coords = run.renderer, run.model.coords
    big = [seed_latent(32, 100 + i) for i in range(6)]

    async def go() -> tuple[int, int, bool]:
        # 6 x 1,024 micro patches; chunk 32: 32 steps each, so that no big tile can finish
        # within the 50 ms below even with the faster inference rewrite (0.1 s or more a tile)
        waiting = [asyncio.ensure_future(renderer.tile(z, tile_box(coords, 0, 0, 256)))
                   for z in big]
        await asyncio.sleep(0.05)
        for task in waiting[2:]:  # four clients leave
            task.cancel()
        small = await renderer.tile(seed_latent(32, 7), tile_box(coords, 0, 0, 32))
        assert small[:4] == b"\x89PNG"
        small_first = not any(t.done() for t in waiting[:2])
        await asyncio.gather(*waiting[:2])
        return renderer.stats.tiles, renderer.stats.dropped, small_first

    tiles, dropped, small_first = asyncio.run(go())
    assert small_first  # the 16-patch tile did not wait for the 6,144-patch tiles
    assert dropped == 4 and tiles == 3 and renderer.queued == 0


def test_the_queue_is_bounded_in_micro_patches(trained_runs: dict) -> None:
    """Issue 19.3: 50 big tiles at once do not queue 50 x 4096 patches: past the bound, 503."""
    app, runs = serve_runs([trained_runs["tiny-inspired"]], max_queued=3 * 4096, cache_bytes=0,
                           chunk=16)
    renderer = runs[0].renderer

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            tasks = [asyncio.ensure_future(client.get(
                f"/api/runs/0/tile?y={i % 8 - 4}&x={i // 8 - 4}&size=512&seed={i}"))
                for i in range(50)]
            while sum(t.done() for t in tasks) < 47:  # the refusals come at once
                await asyncio.sleep(0.01)
            refused = [t.result().status_code for t in tasks if t.done()]
            for task in tasks:
                task.cancel()  # the accepted three are abandoned
            await asyncio.gather(*tasks, return_exceptions=True)
            return refused

    codes = asyncio.run(go())
    assert codes == [503] * 47
    assert renderer.stats.peak_queued <= 3 * 4096


def test_disconnected_clients_free_the_renderer_over_http(trained_runs: dict) -> None:
    """Issue 19.3 as reported: clients of 20 big tiles close their sockets; a fresh small tile
    is answered promptly and the abandoned tiles are not rendered."""
    app, runs = serve_runs([trained_runs["tiny-inspired"]], cache_bytes=0, chunk=32)
    stats = runs[0].renderer.stats
    # 256-px tiles: 1024 micro patches, 32 steps each (slow enough for the 0.3 s below with the
    # faster inference rewrite: at chunk 128 three big tiles could finish in it)
    with real_server(app) as address:
        socks = [raw_request(address, f"/api/runs/0/tile?y={i % 8 - 4}&x={i // 8 - 4}"
                             f"&size=256&seed={40 + i}") for i in range(20)]
        time.sleep(0.3)
        for sock in socks:
            sock.close()
        start = time.monotonic()
        url = f"http://127.0.0.1:{address[1]}/api/runs/0/tile?y=0&x=0&size=32&seed=5"
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.headers["Content-Type"] == "image/png"
        waited = time.monotonic() - start
    assert stats.dropped >= 18 and stats.tiles <= 3, stats  # at most the big tile under way
    assert waited < 20  # before the fix: all 20 big tiles first (minutes on a busy CPU)


def test_idle_and_slow_connections_do_not_lock_others_out(trained_runs: dict) -> None:
    """Issue 19.4: 70 connections that never finish their headers (one trickling a byte at a
    time) neither make other clients get 503 nor stay open past the header deadline."""
    app, _ = serve_runs([trained_runs["tiny-panorama"]])
    with real_server(app, header_timeout=1.0) as address:
        idle = [socket.create_connection(address, timeout=10) for _ in range(70)]
        for sock in idle:
            sock.sendall(b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        trickle = idle[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{address[1]}/api/runs",
                                    timeout=10) as response:
            assert response.status == 200  # was 503 (uvicorn's limit_concurrency counted them)
        for _ in range(5):  # bytes keep arriving, but the deadline is not reset by them
            time.sleep(0.3)
            with contextlib.suppress(OSError):
                trickle.sendall(b"X")
        assert all(closed_by_server(sock, 3.0) for sock in idle)
        for sock in idle:
            sock.close()


def test_the_connection_cap_closes_the_longest_idle_connection(trained_runs: dict) -> None:
    app, _ = serve_runs([trained_runs["tiny-panorama"]])
    with real_server(app, max_connections=8) as address:
        idle = [socket.create_connection(address, timeout=10) for _ in range(8)]
        time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{address[1]}/api/runs",
                                    timeout=10) as response:
            assert response.status == 200
        assert closed_by_server(idle[0], 3.0)  # the oldest idle one made room
        for sock in idle:
            sock.close()


def test_a_slow_upload_gets_408(served: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19.4: the request body has a deadline too."""
    monkeypatch.setattr("cocogan.serve.app.BODY_TIMEOUT_S", 0.3)

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"\x89PNG"
        await asyncio.sleep(2)
        yield b"rest"

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=served[0])
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await asyncio.gather(*(client.post(
                "/api/runs/0/inspire?top=0&left=0", content=slow_body(), headers=UPLOAD)
                for _ in range(MAX_UPLOADS + 1)))

    responses = asyncio.run(go())  # more slow uploads than there are decoding slots
    assert [r.status_code for r in responses] == [408] * (MAX_UPLOADS + 1)
    assert "within 0.3 s" in responses[0].json()["error"]


def test_slow_uploads_do_not_block_inspire_for_everyone(served: tuple,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27.9: four slow uploads held the four upload slots for the 30-s body deadline, so
    every other inspiration got 503 meanwhile; a slot is now taken once the body is in."""
    monkeypatch.setattr("cocogan.serve.app.BODY_TIMEOUT_S", 3.0)
    picture = image_bytes(Image.new("RGB", (32, 32), (200, 40, 40)))

    async def slow_body() -> AsyncIterator[bytes]:
        yield picture[:8]
        await asyncio.sleep(10)
        yield picture[8:]

    async def go() -> tuple[list[int], int, float]:
        transport = httpx.ASGITransport(app=served[0])
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            slow = [asyncio.ensure_future(client.post(
                "/api/runs/0/inspire?top=0&left=0", content=slow_body(), headers=UPLOAD))
                for _ in range(MAX_UPLOADS)]
            await asyncio.sleep(0.2)  # the slow uploads have begun
            start = time.monotonic()
            fast = await client.post("/api/runs/0/inspire?top=0&left=0", content=picture,
                                     headers=UPLOAD)
            waited = time.monotonic() - start
            codes = [r.status_code for r in await asyncio.gather(*slow)]
            return codes, fast.status_code, waited

    codes, fast, waited = asyncio.run(go())
    assert fast == 200 and waited < 2.5  # answered while the slow ones still trickle
    assert codes == [408] * MAX_UPLOADS


def test_uploads_arriving_at_once_are_bounded_in_bytes(served: tuple,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes of uploads still arriving are bounded together (503 past the bound), so
    slow uploads, which now hold no slot, cannot hold unbounded memory either."""
    monkeypatch.setattr("cocogan.serve.app.MAX_RECEIVING_BYTES", 100)
    monkeypatch.setattr("cocogan.serve.app.BODY_TIMEOUT_S", 1.0)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 60
        await asyncio.sleep(2)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=served[0])
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return [r.status_code for r in await asyncio.gather(*(client.post(
                "/api/runs/0/inspire?top=0&left=0", content=body(), headers=UPLOAD)
                for _ in range(2)))]

    assert sorted(asyncio.run(go())) == [408, 503]  # the second 60 bytes pass the bound


def test_many_requests_for_one_big_tile_do_not_lock_others_out(trained_runs: dict) -> None:
    """Issue 27.9: 512 connections asking for the same 512-px tile held every connection the
    server keeps open for the whole render, so everyone else, the page included, got 503. At
    most MAX_WAITERS requests wait for one tile now (the rest get 503 and their connections
    become idle, so they make room); a fresh small tile comes back in under a second."""
    from cocogan.serve.tiles import MAX_WAITERS

    app, runs = serve_runs([trained_runs["tiny-inspired"]], cache_bytes=0, chunk=64)
    renderer = runs[0].renderer
    render_step = renderer.render_step

    def slow_step(work: list) -> list:  # a slower model: 0.1 s per 64 patches, so the 512-px
        time.sleep(0.1 * sum(n for _, n in work) / 64)  # tile's 4096 take over 6 s, and the
        return render_step(work)  # checks below run during its render

    renderer.render_step = slow_step  # type: ignore[method-assign]
    with real_server(app) as address:
        socks = [raw_request(address, "/api/runs/0/tile?y=0&x=0&size=512&seed=77")
                 for _ in range(512)]
        for _ in range(400):  # every request answered 503 or waiting for the tile
            if renderer.stats.refused + renderer.stats.hits >= 511:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{address[1]}"
        for i, path in enumerate(["/", "/api/runs", *(f"/api/runs/0/tile?y=0&x=0&size=32&"
                                                       f"seed={5 + i}" for i in range(3))]):
            start = time.monotonic()
            with urllib.request.urlopen(url + path, timeout=10) as response:
                assert response.status == 200, path
            assert time.monotonic() - start < 1.0, (i, path)
        assert renderer.stats.tiles < 4  # the big tile was still rendering
        assert renderer.stats.refused >= 512 - MAX_WAITERS - 8
        for sock in socks:
            sock.close()


@pytest.mark.parametrize(("method", "path", "headers", "status", "words"), [
    ("GET", "/api/runs", {"Host": "attacker.example"}, 400, "Host 'attacker.example'"),
    ("GET", "/", {"Host": "attacker.example:8000"}, 400, "--allow-host"),
    ("POST", "/api/runs/0/inspire?top=0&left=0",
     {"Origin": "http://attacker.example", **UPLOAD}, 403, "cross-origin POST"),
    ("POST", "/api/runs/0/inspire?top=0&left=0", {"Content-Type": "text/plain"}, 403,
     "without Origin"),
    ("POST", "/api/runs/0/inspire?top=0&left=0", {}, 403, "without Origin"),
    ("POST", "/api/runs/0/inspire?top=0&left=0",
     {"Origin": "null", "Content-Type": "image/png"}, 403, "cross-origin"),
])
def test_foreign_hosts_and_cross_origin_posts_are_refused(served: tuple, method: str,
                                                          path: str, headers: dict,
                                                          status: int, words: str) -> None:
    """Issue 19.5: DNS rebinding (a foreign Host) and CSRF (a foreign or missing Origin with
    a content type a cross-site form can send) are refused before any route runs."""
    small = image_bytes(Image.new("RGB", (32, 32), (10, 200, 30)))
    response = get(served[0], path, method=method, headers=headers, content=small)
    assert response.status_code == status and words in response.json()["error"]


def test_same_origin_posts_and_other_hosts_pass(served: tuple, trained_runs: dict) -> None:
    small = image_bytes(Image.new("RGB", (32, 32), (10, 200, 30)))
    same = get(served[0], "/api/runs/0/inspire?top=0&left=0", method="POST", content=small,
               headers={"Origin": BASE, "Content-Type": "image/png"})
    assert same.status_code == 200, same.text
    localhost = get(served[0], "/api/runs", headers={"Host": "localhost:8000"})
    assert localhost.status_code == 200
    rule = host_rule("0.0.0.0", ["viewer.lan"])
    assert rule.allows("10.1.2.3") and rule.allows("[fe80::1]") and rule.allows("viewer.lan")
    assert not rule.allows("attacker.example")
    assert not host_rule("127.0.0.1").allows("10.1.2.3")
    assert host_rule("127.0.0.1", ["*"]).allows("anything.example")


def test_sixteen_bit_grey_uploads_decode_like_the_data_loader(served: tuple,
                                                              tmp_path: Path) -> None:
    """Issue 19.12: a 16-bit grey PNG is rescaled, not clipped to white; the upload, the data
    loader and `generate inspire`'s loader give the same pixels."""
    grey = np.full((32, 32), 11206, np.uint16)  # 11206 / 65535 = 0.171
    grey[:, :16] = 40000
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    upload = _decode_upload(path.read_bytes(), served[1][0].config)
    loader = imaging.load_image(path, 32, 32, mode="stretch")
    want = (11206 / 65535 + 40000 / 65535) / 2  # the mean grey level, from the file's values
    assert abs(float((upload + 1).mean() / 2) - want) < 1 / 255
    assert torch.equal(upload, loader)
    assert torch.equal(load_image(path), loader)  # generate inspire --image / --patch


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming width x height pixels: signature, IHDR (valid CRC), empty IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + info + bytes(16)


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 frame header of width x height, SOS and EOI: no pixel data."""
    def segment(marker: int, data: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(
        bytes([c, 0x11, 0]) for c in (1, 2, 3))
    scan = bytes([3]) + b"".join(bytes([c, 0]) for c in (1, 2, 3)) + bytes([0, 63, 0])
    return b"\xff\xd8" + segment(0xC0, frame) + segment(0xDA, scan) + b"\xff\xd9"


@pytest.mark.parametrize("body", [png_header(20000, 20000), bmp_header(30000, 30000),
                                  jpeg_header(65500, 65500), png_header(5000, 5000)],
                         ids=["png-20000", "bmp-30000", "jpeg-65500", "png-5000"])
def test_image_bombs_get_413(served: tuple, body: bytes) -> None:
    """Issue 19.13: headers claiming huge images (built small here) are 413, not 415."""
    assert len(body) < 100
    response = get(served[0], "/api/runs/0/inspire?top=0&left=0", method="POST",
                   content=body, headers=UPLOAD)
    assert response.status_code == 413 and "too large" in response.json()["error"]


@pytest.mark.parametrize(("query", "words"), [
    ("top=0&left=99999999999999999999999", "left=99999999999999999999999 must be an integer "
     "in [0, 16]"),
    ("top=-99999999999999999999999&left=0", "top=-99999999999999999999999 must be an integer "
     "in [0, 16]"),
])
def test_out_of_range_integers_name_the_parameter(served: tuple, query: str,
                                                  words: str) -> None:
    """Issue 19.16: huge integers get a 400 naming the parameter and its range."""
    small = image_bytes(Image.new("RGB", (32, 32), (10, 200, 30)))
    response = get(served[0], f"/api/runs/0/inspire?{query}", method="POST", content=small,
                   headers=UPLOAD)
    assert response.status_code == 400 and words in response.json()["error"]
    pano = get(served[0], "/api/runs/1/inspire?top=0&left=99999999999999999999999",
               method="POST", content=small, headers=UPLOAD)
    assert pano.status_code == 400 and "in [0, 95]" in pano.json()["error"]
    for name in ("y", "x"):
        tile = get(served[0], f"/api/runs/0/tile?y=0&x=0&{name}=99999999999999999999999")
        assert tile.status_code == 400
    tile = get(served[0], "/api/runs/0/tile?y=99999999999999999999999&x=0&size=32")
    assert "y=99999999999999999999999 must be an integer in [-64, 64]" in tile.json()["error"]
