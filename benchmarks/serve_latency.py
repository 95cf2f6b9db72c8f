"""Latency of `cocogan serve`: time to first tile and tiles/s over real HTTP on loopback.

For each run a real uvicorn server (as `cocogan serve` starts it) answers an HTTP client on
127.0.0.1. Every measurement uses a seed not seen before, so the tile cache never helps:

- first tile: one tile alone (the wait after a seed change before anything shows);
- screenful, batched: the tiles of a 1200x600-pixel view requested at once, as the page does
  (the server batches them into few forward passes);
- screenful, one by one: the same tiles requested sequentially (the simple way: one forward
  pass per tile); the ratio of the two is the batching gain measured in the same run;
- under abandoned load (``--abandoned N``): N clients ask for 512-px tiles and close their
  sockets after ``--abandon-after`` seconds; then one small tile is requested. Its latency is
  given as a ratio to the small tile's idle latency measured just before, in the same run.

Optionally writes a screenshot of the page with Debian's Chromium (``--screenshot PATH``).

    python benchmarks/serve_latency.py --run demo-output/blobs/run --run demo-output/skyline/run
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from cocogan.cli.serve import bind
from cocogan.serve.app import create_app, load_runs

try:
    from cocogan.serve.connections import server_config
except ImportError:  # a version before issue 19 (to measure "before")
    def server_config(app: object) -> uvicorn.Config:
        return uvicorn.Config(app, log_level="warning")

VIEW_W, VIEW_H, ZOOM = 1200, 600, 4  # CSS pixels of the viewer and a typical zoom


def start_server(paths: list[str]) -> tuple[uvicorn.Server, str]:
    app = create_app(load_runs(paths, "cpu"))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(server_config(app))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def screen_tiles(run: dict) -> list[tuple[int, int]]:
    """Tile (y, x) indices of a view centred on the trained image."""
    span = run["tile"] * ZOOM
    rows, cols = -(-VIEW_H // span) + 1, -(-VIEW_W // span) + 1
    y0 = run["height"] // run["tile"] // 2 - rows // 2
    x0 = run["width"] // run["tile"] // 2 - cols // 2
    return [(y0 + i, x0 + j) for i in range(rows) for j in range(cols)]


async def measure(base: str, run: dict, repeats: int) -> dict:
    tiles = screen_tiles(run)
    url = f"{base}/api/runs/{run['id']}/tile"
    first, batched, single = [], [], []
    async with httpx.AsyncClient(timeout=120) as client:
        async def get(seed: int, y: int, x: int) -> None:
            response = await client.get(url, params={"y": y, "x": x, "seed": seed})
            response.raise_for_status()

        for r in range(repeats):
            seed = 10_000 + 3 * r
            start = time.perf_counter()
            await get(seed, *tiles[0])
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            await asyncio.gather(*(get(seed + 1, y, x) for y, x in tiles))
            batched.append(time.perf_counter() - start)
            start = time.perf_counter()
            for y, x in tiles:
                await get(seed + 2, y, x)
            single.append(time.perf_counter() - start)
    n = len(tiles)
    return {"tiles": n, "first_ms": 1000 * statistics.median(first),
            "batched_tps": n / statistics.median(batched),
            "single_tps": n / statistics.median(single)}


def small_size(run: dict) -> int:
    """The side of the "small tile": 32 px where the micro patch allows, else the run's tile."""
    return 32 if 32 % run["micro"] == 0 else run["tile"]


async def abandoned(base: str, run: dict, clients: int, after_s: float, repeats: int,
                    give_up_s: float) -> dict:
    """Small-tile latency idle and after ``clients`` 512-px requests were abandoned (None when
    it took longer than ``give_up_s``)."""
    url = f"{base}/api/runs/{run['id']}/tile"
    host, port = base.removeprefix("http://").split(":")
    size = small_size(run)
    big = 512 // run["micro"] * run["micro"]
    reach = run["reach"] // big  # 512-px tiles that fit within the reach past the top-left
    spots = [(y, x) for y in range(-reach, reach) for x in range(-reach, reach)]
    async with httpx.AsyncClient(timeout=give_up_s) as client:
        async def small(seed: int) -> float:
            start = time.perf_counter()
            response = await client.get(url, params={"y": 0, "x": 0, "size": size, "seed": seed})
            response.raise_for_status()
            return time.perf_counter() - start

        idle = statistics.median([await small(20_000 + r) for r in range(repeats)])
        stats = (await client.get(f"{base}/api/stats")).json()[run["id"]]
        socks = []
        for i in range(clients):  # raw sockets, so that closing one is a real disconnect
            y, x = spots[i % len(spots)]
            sock = socket.create_connection((host, int(port)))
            sock.sendall(f"GET /api/runs/{run['id']}/tile?y={y}&x={x}&size={big}&seed="
                         f"{30_000 + i} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            socks.append(sock)
        await asyncio.sleep(after_s)
        for sock in socks:
            sock.close()
        try:
            loaded: float | None = await small(20_100)
        except httpx.TimeoutException:
            return {"idle_ms": 1000 * idle, "loaded_ms": None, "size": size, "big": big,
                    "rendered": "?"}
        after = (await client.get(f"{base}/api/stats")).json()[run["id"]]
    return {"idle_ms": 1000 * idle, "loaded_ms": 1000 * loaded, "size": size, "big": big,
            "rendered": after["tiles"] - stats["tiles"] - 1}


def screenshot(base: str, path: Path, run: int) -> None:
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(base + "/")
        page.select_option("#run", str(run))
        page.wait_for_function("""() => {
          const imgs = [...document.querySelectorAll('#layer img')];
          return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
        }""", timeout=60_000)
        page.check("#grid")
        page.screenshot(path=str(path))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="run directory (repeat)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--abandoned", type=int, default=0,
                        help="also measure a small tile after N abandoned 512-px requests")
    parser.add_argument("--abandon-after", type=float, default=0.5,
                        help="seconds before the abandoned clients close their sockets")
    parser.add_argument("--give-up", type=float, default=600,
                        help="seconds after which the loaded small tile counts as '> N s'")
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the page here")
    parser.add_argument("--screenshot-run", type=int, default=0, help="run shown (index)")
    args = parser.parse_args()
    server, base = start_server(args.run)
    runs = httpx.get(f"{base}/api/runs").json()
    print("| run | preset | tile px | screen tiles | first tile ms | tiles/s batched | "
          "tiles/s one by one | batched / one by one |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs if args.repeats > 0 else []:
        m = asyncio.run(measure(base, run, args.repeats))
        print(f"| {run['name']} | {run['preset']} | {run['tile']} | {m['tiles']} | "
              f"{m['first_ms']:.0f} | {m['batched_tps']:.0f} | {m['single_tps']:.0f} | "
              f"{m['batched_tps'] / m['single_tps']:.1f}x |")
    if args.abandoned:
        print(f"\n| run | small tile | idle ms | after {args.abandoned} abandoned 512-px "
              "requests, ms | ratio | big tiles rendered anyway |")
        print("|---|---|---|---|---|---|")
    for run in runs if args.abandoned else []:
        m = asyncio.run(abandoned(base, run, args.abandoned, args.abandon_after,
                                  max(1, args.repeats), args.give_up))
        if m["loaded_ms"] is None:
            loaded = f"> {args.give_up:.0f} s"
            ratio = f"> {1000 * args.give_up / m['idle_ms']:.0f}x"
        else:
            loaded, ratio = f"{m['loaded_ms']:.0f}", f"{m['loaded_ms'] / m['idle_ms']:.1f}x"
        print(f"| {run['name']} | {m['size']} px | {m['idle_ms']:.0f} | {loaded} | {ratio} | "
              f"{m['rendered']} of {args.abandoned} |", flush=True)
    if args.screenshot:
        screenshot(base, args.screenshot, args.screenshot_run)
        print(f"wrote {args.screenshot}")
    server.should_exit = True


if __name__ == "__main__":
    main()
