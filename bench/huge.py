"""Peak memory of the shim while 16 clients sweep the tiles of a 20000x15000 master.

For each master (a pyramidal JPEG-compressed TIFF, a plain JPEG, a JPEG 2000; made once by the
vips CLI, as the tests make them) a fresh shim is started on 127.0.0.1 with a memory budget for
decoded pixels, and ``--clients`` clients ask every tile a deep-zoom viewer would ask (every
tile from 1/128 to 1/8, one in four at 1/4, a spread sample at 1/2 and at full size, tile size
from info.json), in random order. Reported per master: the resident memory at rest, the peak
(VmHWM, summed over the shim's processes, and the peak of the summed VmRSS sampled every 50 ms),
the budget and decoded-source cache it is measured against, the answers by status (501: needs
more than the whole budget; 503: waited too long for it) and the time taken.

    .venv/bin/python bench/huge.py [--budget-mb 256] [--clients 16] [--json out.json]

Not a pass/fail test: tests/http/test_huge.py checks the bound; this reports the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.http.test_huge import HEIGHT, MB, WIDTH, make_masters, shim_config
from tests.support import need_tool, request, start_shim

SOURCES = {"tif": "huge-tif", "jpg": "huge-jpg", "jp2": "huge-jp2"}


def sweep_paths(name: str, tile: int, factors: list[int], seed: int = 5) -> list[str]:
    """The tiles of a zoom session over the whole image, as IIIF 3.0 URLs."""
    paths = []
    for sf in factors:
        span = tile * sf
        cols, rows = math.ceil(WIDTH / span), math.ceil(HEIGHT / span)
        every = [(c, r) for r in range(rows) for c in range(cols)]
        if sf == 4:
            every = every[::4]
        elif sf < 4:
            every = every[:: max(1, len(every) // 40)]
        for col, row in every:
            x, y = col * span, row * span
            w, h = min(span, WIDTH - x), min(span, HEIGHT - y)
            size = f"{math.ceil(w / sf)},{math.ceil(h / sf)}"
            paths.append(f"/iiif/3/{name}/{x},{y},{w},{h}/{size}/0/default.jpg")
    random.Random(seed).shuffle(paths)
    return paths


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def status_of(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return values


def measure(masters: Path, name: str, args: argparse.Namespace, work: Path) -> dict[str, object]:
    tmp = work / name
    tmp.mkdir(exist_ok=True)
    config = shim_config(tmp, masters, args.budget_mb * MB, args.decoded_mb * MB, args.workers)
    proc = start_shim(config, tmp, "--processes", str(args.processes))
    try:
        info = json.loads(request(proc.port, f"/iiif/3/{name}/info.json", timeout=60).body)
        grid = info["tiles"][0]
        tile, factors = grid["width"], sorted(grid["scaleFactors"], reverse=True)
        request(proc.port, f"/iiif/3/{name}/full/64,/0/default.jpg", timeout=300)  # warm up
        time.sleep(0.5)
        pids = tree(proc.proc.pid)
        rest = sum(status_of(p).get("VmRSS", 0) for p in pids)
        paths = sweep_paths(name, tile, factors)
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        queue = list(paths)
        peak_rss = [rest]
        done = threading.Event()

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    path = queue.pop()
                status = request(proc.port, path, timeout=600).status
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1

        def sampler() -> None:
            while not done.wait(0.05):
                total = sum(status_of(p).get("VmRSS", 0) for p in pids)
                peak_rss[0] = max(peak_rss[0], total)

        watcher = threading.Thread(target=sampler)
        watcher.start()
        started = time.perf_counter()
        clients = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        hwm = sum(status_of(p).get("VmHWM", 0) for p in pids)
    finally:
        proc.stop()
    return {
        "source": name,
        "requests": len(paths),
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(seconds, 1),
        "rest_mb": round(rest / MB),
        "peak_hwm_mb": round(hwm / MB),
        "peak_sampled_rss_mb": round(peak_rss[0] / MB),
        "over_rest_mb": round((hwm - rest) / MB),
        "budget_mb": args.budget_mb,
        "decoded_cache_mb": args.decoded_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--budget-mb", type=int, default=256, help="server.memory_budget")
    parser.add_argument("--decoded-mb", type=int, default=64, help="cache.decoded_bytes")
    parser.add_argument("--workers", type=int, default=4, help="server.workers")
    parser.add_argument("--processes", type=int, default=1, help="server.processes")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--sources", default="tif,jpg,jp2", help=f"comma-separated, of {', '.join(SOURCES)}"
    )
    parser.add_argument(
        "--masters", type=Path, default=Path("/tmp/iiif-shim-huge"), help="kept between runs"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.masters.mkdir(parents=True, exist_ok=True)
    masters = make_masters(args.masters, need_tool("vips"))
    work = args.masters / "runs"
    work.mkdir(exist_ok=True)
    results = []
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"# budget {args.budget_mb} MB, decoded cache {args.decoded_mb} MB, "
        f"{args.workers} workers x {args.processes} processes, {args.clients} clients"
    )
    for key in args.sources.split(","):
        result = measure(masters, SOURCES[key], args, work)
        results.append(result)
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
