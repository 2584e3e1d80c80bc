"""Deep-zoom tile and thumbnail throughput: iiif-shim (files backend) against a peer server.

The peer is the IIIF reference implementation (PyPI ``iiif``, ``iiif_testserver.py`` with the
PIL manipulator), serving the same 6000x4000 JPEG in the same run on the same machine. Both are
started here on 127.0.0.1, asked the same requests with the same client concurrency, and the
result is reported as ratios, since absolute numbers on a shared machine mean little.

    bash bench/run.sh            # sets up .venv-bench with the peer, writes docs/benchmarks.md

Workloads (IIIF 3.0 URLs, tile size 512, as OpenSeadragon would ask):
- ``session``: a zoom-in session: every tile at scale factors 16, 8 and 4, then 16 tiles at 2
  and 16 at 1 (41 tiles).
- ``deep``: 24 full-resolution tiles (scale factor 1) from across the image.
- ``thumbs``: 24 thumbnails ``full/256,`` (small outputs of the large master).
The shim runs with its rendered-image cache off, so every request is rendered. It is measured
three ways, each in a fresh process: with the decoded-source cache off (every request decodes
the master, like the peer), and with it on, cold (the first pass) and warm (later passes: crop
and encode from the decoded master). The peer has no cache: its numbers are the median pass.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import support
from tests.support import Process, free_port, write_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "iiif_shim" / "defaults" / "images" / "chart.jpg"
W, H, TILE = 6000, 4000, 512


def tiles_at(sf: int, tile: int = TILE, width_only: bool = False) -> list[str]:
    """Every tile's region/size at scale factor ``sf``, as a viewer asks (``w,`` for 2.x)."""
    span = tile * sf
    out = []
    for y in range(0, H, span):
        for x in range(0, W, span):
            rw, rh = min(span, W - x), min(span, H - y)
            size = f"{math.ceil(rw / sf)}," + ("" if width_only else f"{math.ceil(rh / sf)}")
            out.append(f"{x},{y},{rw},{rh}/{size}")
    return out


def workloads() -> dict[str, list[str]]:
    session = tiles_at(16) + tiles_at(8) + tiles_at(4) + tiles_at(2)[:16] + tiles_at(1)[30:46]
    deep = tiles_at(1)[::4][:24]
    thumbs = ["full/256,"] * 24
    return {
        "session": [f"{t}/0/default.jpg" for t in session],
        "deep": [f"{t}/0/default.jpg" for t in deep],
        "thumbs": [f"{t}/0/default.jpg" for t in thumbs],
    }


@dataclass
class Result:
    seconds: float
    latencies: list[float]


async def run(base: str, paths: list[str], concurrency: int) -> Result:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path = queue.get_nowait()
            t0 = time.perf_counter()
            async with session.get(f"{base}/{path}") as resp:
                body = await resp.read()
                if resp.status != 200 or len(body) < 100:
                    raise RuntimeError(f"{base}/{path}: {resp.status}")
            latencies.append(time.perf_counter() - t0)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return Result(time.perf_counter() - start, latencies)


def start_shim(images: Path, tmp: Path, decoded_bytes: int) -> tuple[Process, str]:
    config = write_config(
        tmp / f"bench-{decoded_bytes}.yaml",
        f"cache: {{image_bytes: 0, decoded_bytes: {decoded_bytes}}}\n"
        f"iiif: {{tile_size: {TILE}}}\n"
        f'backends: {{local: {{type: files, root: "{images}"}}}}\n'
        "routes: [{backend: local}]\n",
    )
    shim = support.start_shim(config, tmp, "--log-level", "warning")
    return shim, f"http://127.0.0.1:{shim.port}/iiif/3/chart"


def start_peer(peer: str, images: Path, tmp: Path) -> tuple[Process, str]:
    port = free_port()
    args = [
        peer,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--image-dir",
        str(images),
        "--api-versions",
        "3.0",
        "--manipulators",
        "pil",
        "--tile-width",
        str(TILE),
        "--tile-height",
        str(TILE),
        "-q",
    ]
    # run in tmp: the peer writes iiif_testserver.pid into its working folder
    peer_proc = Process(args, port, tmp / "peer.log", cwd=tmp)
    return peer_proc, f"http://127.0.0.1:{port}/3.0_pil/chart"


def passes(base: str, paths: list[str], concurrency: int, rounds: int) -> list[Result]:
    asyncio.run(run(base, ["full/8,/0/default.jpg"], 1))  # facts and imports, not the workload
    return [asyncio.run(run(base, paths, concurrency)) for _ in range(rounds)]


def median(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.seconds)[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer", default=str(ROOT / ".venv-bench" / "bin" / "iiif_testserver.py"))
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    def rate(n: int, r: Result) -> float:
        return n / r.seconds

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        images = tmp / "images"
        images.mkdir()
        shutil.copy(CHART, images / "chart.jpg")
        peer, peer_base = start_peer(args.peer, images, tmp)
        try:
            for name, paths in workloads().items():
                n = len(paths)
                p = median(passes(peer_base, paths, args.concurrency, args.rounds))
                shim, base = start_shim(images, tmp, decoded_bytes=0)
                try:
                    plain = median(passes(base, paths, args.concurrency, args.rounds))
                finally:
                    shim.stop()
                shim, base = start_shim(images, tmp, decoded_bytes=256 * 1024 * 1024)
                try:
                    cached = passes(base, paths, args.concurrency, args.rounds + 1)
                finally:
                    shim.stop()
                cold, warm = cached[0], median(cached[1:])
                rows.append((name, n, p, plain, cold, warm))
                print(
                    f"{name}: peer {rate(n, p):.1f}, shim uncached {rate(n, plain):.1f}, "
                    f"cold {rate(n, cold):.1f}, warm {rate(n, warm):.1f} req/s",
                    flush=True,
                )
        finally:
            peer.stop()

    lines = [
        "# Benchmarks",
        "",
        "Written by `bash bench/run.sh` (`bench/tiles.py`); see its docstring for the method.",
        f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, client concurrency {args.concurrency}, "
        f"{args.rounds} passes per measurement. The machine is shared: compare the ratios.",
        "",
        "Source: the bundled `chart.jpg` (6000x4000 JPEG, 2.2 MB), tile size 512, IIIF 3.0.",
        "Peer: the IIIF reference implementation (`iiif` on PyPI, `iiif_testserver.py`, PIL).",
        "iiif-shim: `files` backend, rendered-image cache off; *uncached* also has the",
        "decoded-source cache off; *cold* is the first pass with it on, *warm* a later pass.",
        "",
        "| workload | requests | peer req/s | shim uncached | shim cold | shim warm "
        "| uncached / peer | cold / peer | warm / peer | warm median ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n, p, plain, cold, warm in rows:
        lines.append(
            f"| {name} | {n} | {rate(n, p):.1f} | {rate(n, plain):.1f} | {rate(n, cold):.1f} | "
            f"{rate(n, warm):.1f} | {p.seconds / plain.seconds:.1f}x | "
            f"{p.seconds / cold.seconds:.1f}x | {p.seconds / warm.seconds:.1f}x | "
            f"{statistics.median(warm.latencies) * 1000:.0f} |"
        )
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
