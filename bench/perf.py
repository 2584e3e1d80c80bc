"""Performance side by side with the servers people would pick instead (on demand, never a
pass/fail test); writes docs/performance.md and docs/performance.png.

    bash bench/perf.sh [FIGURE ...] [--quick] [--profile] [--rounds R] [--seconds S]

FIGURE is any of 1-6 (or passthrough, pillow, scale, loop, memory, cost); none means all.
Every server runs on 127.0.0.1, started and stopped here. Each figure starts its contestants
side by side, sends each one pass of its sweep (checking every answer is a 200 image), then runs
``--rounds`` alternating rounds (A B C, then C B A, ...) of ``--seconds`` of wrk each, and
reports the median requests/s and the ratios of medians. The sweep is every tile OpenSeadragon
asks while zooming fully into the 6000x4000 chart at one point (a 1280x800 viewer, every level
from one tile to full resolution), plus three thumbnails; wrk cycles through it, each thread
from its own offset.

1. passthrough: the ``iip`` backend against iipsrv's own IIIF endpoint, 256-px native tiles,
   IIIF 2.1 URLs; cold (shim caches off) and warm (from the shim's cache).
2. pillow: 512-px tiles rendered from a plain JPEG (``http`` backend over nginx) and from a
   pyramidal TIFF (``files``), rendered-image cache off, with each engine this build has,
   against the reference implementation, Thumbor and iiif-processor (sharp/libvips).
3. scale: the JPEG sweep with 1, 2 and one-per-CPU processes (when ``server.processes``
   exists); two shims sharing one Redis (when ``cache.redis`` exists), backend requests
   counted in lighttpd's access log.
4. loop: p50/p99 of a cached info.json while tile rendering keeps every core busy.
5. memory: the output of ``bench/huge.py`` (peak RSS against the memory budget), when present.
6. cost: CPU microseconds of the shim's processes (all of them, from /proc) per passthrough
   request and per cached hit, over a fixed number of requests (hey).

``--profile`` records every shim with py-spy while its figure runs (flame graphs in
``bench/out/``). Raw numbers go to ``bench/out/perf.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, tiles
from bench.chart import Bar, draw
from bench.load import Run
from bench.peers import (
    NODE_MODULES,
    Features,
    Shim,
    start_iiif_processor,
    start_nginx,
    start_redis,
    start_reference,
)
from tests.servers import IipServer, make_tiff, start_thumbor
from tests.support import Process

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
W, H = 6000, 4000
VIEWPORT = (1280, 800)
FOCUS = (0.62, 0.41)
THUMBS = (128, 256, 512)
FIGURES = {
    "1": "passthrough",
    "2": "pillow",
    "3": "scale",
    "4": "loop",
    "5": "memory",
    "6": "cost",
}


@dataclass(frozen=True)
class Crop:
    """One request of the sweep: a region of the source and its output size."""

    x: int
    y: int
    w: int
    h: int
    sw: int
    sh: int

    @property
    def full(self) -> bool:
        return (self.x, self.y, self.w, self.h) == (0, 0, W, H)


def osd_sweep(tile: int) -> list[Crop]:
    """The tiles OpenSeadragon asks while zooming into FOCUS, level by level, then thumbnails."""
    crops = []
    sf = 1
    while max(W, H) / sf > tile:
        sf *= 2
    while sf >= 1:
        half_w, half_h = VIEWPORT[0] * sf / 2, VIEWPORT[1] * sf / 2
        cx, cy = FOCUS[0] * W, FOCUS[1] * H
        x0, y0 = max(0.0, cx - half_w), max(0.0, cy - half_h)
        x1, y1 = min(W, cx + half_w), min(H, cy + half_h)
        span = tile * sf
        for ty in range(int(y0 // span), math.ceil(y1 / span)):
            for tx in range(int(x0 // span), math.ceil(x1 / span)):
                x, y = tx * span, ty * span
                rw, rh = min(span, W - x), min(span, H - y)
                crops.append(Crop(x, y, rw, rh, math.ceil(rw / sf), math.ceil(rh / sf)))
        sf //= 2
    crops += [Crop(0, 0, W, H, t, round(H * t / W)) for t in THUMBS]
    return crops


def iiif_paths(base: str, crops: list[Crop], version: int) -> list[str]:
    out = []
    for c in crops:
        region = "full" if c.full else f"{c.x},{c.y},{c.w},{c.h}"
        size = f"{c.sw}," if version == 2 or c.full else f"{c.sw},{c.sh}"
        out.append(f"{base}/{region}/{size}/0/default.jpg")
    return out


def thumbor_paths(file: str, crops: list[Crop]) -> list[str]:
    out = []
    for c in crops:
        crop = "" if c.full else f"{c.x}x{c.y}:{c.x + c.w}x{c.y + c.h}/"
        out.append(f"/unsafe/{crop}{c.sw}x{c.sh}/filters:format(jpeg):quality(85)/{file}")
    return out


@dataclass
class Contestant:
    name: str
    base: str
    paths: list[str]


@dataclass
class Figure:
    key: str
    title: str
    lines: list[str] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    verdicts: list[tuple[str, str, str, str]] = field(
        default_factory=list
    )  # what, target, got, met
    raw: dict[str, Any] = field(default_factory=dict)


class Bench:
    """Shared state of one run: options, features, the work folder, shims to profile."""

    def __init__(self, args: argparse.Namespace, features: Features, work: Path) -> None:
        self.args = args
        self.features = features
        self.work = work
        self.profilers: list[load.Profiler] = []
        self.figure = ""
        self.jpegs = work / "jpeg"
        self.tiffs = work / "tiff"
        self.both = work / "both"
        for folder in (self.jpegs, self.tiffs, self.both):
            folder.mkdir()
        shutil.copy(tiles.CHART, self.jpegs / "chart.jpg")
        make_tiff(tiles.CHART, self.tiffs / "chart.tif")
        shutil.copy(self.jpegs / "chart.jpg", self.both / "chart.jpg")
        shutil.copy(self.tiffs / "chart.tif", self.both / "chart.tif")

    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def cpus(self) -> int:
        return os.cpu_count() or 1

    def shim(self, name: str, backends: str, **kwargs: object) -> Shim:
        shim = Shim(f"{self.figure}-{name}", self.work / "shims", backends, self.features, **kwargs)  # type: ignore[arg-type]
        if self.args.profile:
            stacks = OUT / f"profile-{self.figure}-{name}.txt"
            self.profilers.append(load.Profiler(shim.pid, stacks))
        return shim

    def stop_profiles(self) -> list[Path]:
        done = []
        for p in self.profilers:
            p.stop()
            if p.out.exists():
                done.append(p.out)
        self.profilers = []
        return done

    def rounds(self, contestants: list[Contestant], connections: int) -> dict[str, list[Run]]:
        """One checked pass each, then alternating wrk rounds. A round lasts ``--seconds``, or
        three times that contestant's checked pass when longer (at most 24 s, 8 with
        ``--quick``), so that a slow server completes its sweep about three times a round and
        the requests still in flight when wrk stops weigh little."""
        seconds: dict[str, float] = {}
        cap = 8.0 if self.args.quick else 24.0
        for c in contestants:
            done = asyncio.run(tiles.run(c.base, [p.lstrip("/") for p in c.paths], 4))
            seconds[c.name] = min(cap, max(self.args.seconds, 3 * done.seconds))
        results: dict[str, list[Run]] = {c.name: [] for c in contestants}
        for r in range(self.args.rounds):
            for c in contestants if r % 2 == 0 else contestants[::-1]:
                run = load.wrk(c.base, c.paths, seconds[c.name], connections)
                results[c.name].append(run)
                print(
                    f"  round {r + 1} {c.name}: {run.rps:.1f} req/s, {run.errors} errors",
                    flush=True,
                )
        return results


def med(runs: list[Run]) -> float:
    return statistics.median(r.rps for r in runs)


def ratio(ours: float, theirs: float) -> float:
    """``ours / theirs``; NaN when the peer completed nothing (too short a run)."""
    return ours / theirs if theirs > 0 else float("nan")


def p(runs: list[Run], q: str) -> float:
    return statistics.median(r.latency_ms.get(q, float("nan")) for r in runs)


def errors(runs: list[Run]) -> int:
    return sum(r.errors for r in runs)


def table(results: dict[str, list[Run]], requests: int) -> list[str]:
    lines = [
        f"Sweep of {requests} requests, cycled. "
        f"Median of {len(next(iter(results.values())))} rounds.",
        "",
        "| server | req/s (median) | rounds (req/s) | s/round | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rounds = ", ".join(f"{r.rps:.1f}" for r in runs)
        lines.append(
            f"| {name} | {med(runs):.1f} | {rounds} | {runs[0].seconds:g} | {p(runs, '50'):.1f} "
            f"| {p(runs, '99'):.1f} | {errors(runs)} |"
        )
    first = next(iter(results.values()))[0]
    lines += ["", f"Client, each round: `{first.command}` (the server's paths in paths.txt)."]
    return lines


def verdict(fig: Figure, what: str, ratio: float, target: float | None, target_text: str) -> None:
    if math.isnan(ratio):
        fig.verdicts.append((what, target_text, "n/a (a run completed no request)", "**no**"))
        return
    met = "-" if target is None else ("yes" if ratio >= target else "**no**")
    fig.verdicts.append((what, target_text, f"{ratio:.2f}x", met))
    fig.bars.append(Bar(f"{fig.key}. {what}", ratio, target))


def iip_backend(iip: IipServer, extra: str = "") -> str:
    return (
        f'backends: {{iip: {{type: iip, url: "{iip.url}/fcgi-bin/iipsrv.fcgi", '
        f'path: "{{id}}.tif"{extra}}}}}\nroutes: [{{backend: iip}}]'
    )


def fig_passthrough(b: Bench) -> Figure:
    fig = Figure("1", "Passthrough tiles: the `iip` backend against iipsrv's own IIIF endpoint")
    crops = osd_sweep(256)
    iip = IipServer(b.tiffs, b.dir("iip1"), ready="chart.tif")
    shims: list[Shim] = []
    try:
        uncached = iip_backend(iip, ", tile_cache_bytes: 0")
        shims.append(b.shim("cold", uncached, image_bytes=0))
        shims.append(b.shim("warm", iip_backend(iip)))
        # the shim as installed: one process per CPU (server.processes' default)
        many = b.features.processes and b.cpus > 1
        if many:
            shims.append(b.shim("cold-n", uncached, image_bytes=0, processes=None))
            shims.append(b.shim("warm-n", iip_backend(iip), processes=None))
        paths = iiif_paths("/iiif/2/chart", crops, 2)
        contestants = [
            Contestant("iipsrv IIIF", iip.url, iiif_paths("/iiif/chart.tif", crops, 2)),
            Contestant("shim cold", shims[0].url, paths),
            Contestant("shim warm", shims[1].url, paths),
        ]
        if many:
            contestants += [
                Contestant(f"shim cold, {b.cpus} processes", shims[2].url, paths),
                Contestant(f"shim warm, {b.cpus} processes", shims[3].url, paths),
            ]
        results = b.rounds(contestants, b.args.connections)
    finally:
        for s in shims:
            s.stop()
        iip.stop()
    peer = med(results["iipsrv IIIF"])
    fig.lines += [
        "iipsrv 1 FastCGI process behind lighttpd (as in the tests); the shim (1 process, and",
        "as installed: one per CPU) speaks IIP to the same iipsrv. *cold*: rendered-image cache",
        "and tile cache off, every request goes to iipsrv; *warm*: default caches, after one pass.",
        "",
        *table(results, len(crops)),
    ]
    verdict(fig, "cold: shim / iipsrv", ratio(med(results["shim cold"]), peer), 1.0, ">= 1.0x")
    verdict(fig, "warm: shim / iipsrv", ratio(med(results["shim warm"]), peer), 3.0, ">= 3x")
    for name in results:
        if "processes" in name:
            state = "cold" if "cold" in name else "warm"
            target, text = (1.0, ">= 1.0x") if state == "cold" else (3.0, ">= 3x")
            n = name.split(", ")[1]
            verdict(
                fig, f"{state}, {n}: shim / iipsrv", ratio(med(results[name]), peer), target, text
            )
    fig.raw = {k: [asdict(r) for r in v] for k, v in results.items()}
    return fig


def pillow_backends(nginx: Process, b: Bench) -> str:
    return (
        "backends:\n"
        f'  web: {{type: http, url: "http://127.0.0.1:{nginx.port}/{{id}}.jpg"}}\n'
        f'  disk: {{type: files, root: "{b.tiffs}"}}\n'
        "routes:\n"
        '  - {match: "^jpeg$", backend: web, id: chart}\n'
        '  - {match: "^tiff$", backend: disk, id: chart}\n'
    )


def engines(b: Bench) -> list[str]:
    return ["pillow", "vips"] if b.features.vips else ["pillow"]


def fig_pillow(b: Bench) -> Figure:
    fig = Figure("2", "Pillow path: tiles rendered from a master, against other image servers")
    crops = osd_sweep(512)
    procs: list[Process] = []
    shims: list[Shim] = []
    results: dict[str, dict[str, list[Run]]] = {}
    try:
        nginx = start_nginx(b.jpegs, b.work / "nginx2")
        procs.append(nginx)
        ref_jpeg, ref_jpeg_base = start_reference(b.jpegs, b.work / "ref-jpeg")
        procs.append(ref_jpeg)
        ref_tiff, ref_tiff_base = start_reference(b.tiffs, b.work / "ref-tiff")
        procs.append(ref_tiff)
        thumbor = start_thumbor(b.both, b.dir("thumbor"))
        procs.append(thumbor)
        node = start_iiif_processor(b.both, b.work / "node")
        procs.append(node)
        for engine in engines(b):
            shims.append(b.shim(engine, pillow_backends(nginx, b), image_bytes=0, engine=engine))
        for source, ref_port, ref_base in (
            ("jpeg", ref_jpeg.port, ref_jpeg_base),
            ("tiff", ref_tiff.port, ref_tiff_base),
        ):
            file = f"chart.{'jpg' if source == 'jpeg' else 'tif'}"
            contestants = [
                Contestant(f"shim {e}", s.url, iiif_paths(f"/iiif/3/{source}", crops, 3))
                for e, s in zip(engines(b), shims, strict=True)
            ]
            contestants += [
                Contestant(
                    "reference (iiif, PIL)",
                    f"http://127.0.0.1:{ref_port}",
                    iiif_paths(ref_base, crops, 3),
                ),
                Contestant(
                    "Thumbor", f"http://127.0.0.1:{thumbor.port}", thumbor_paths(file, crops)
                ),
                Contestant(
                    "iiif-processor",
                    f"http://127.0.0.1:{node.port}",
                    iiif_paths(f"/iiif/3/{file}", crops, 3),
                ),
            ]
            print(f" source {source}", flush=True)
            results[source] = b.rounds(contestants, 2 * b.cpus)
    finally:
        for s in shims:
            s.stop()
        for proc in procs:
            proc.stop()
    fig.lines += [
        "512-px tiles at 3.0 `w,h` sizes (Thumbor: the same crops and sizes, JPEG quality 85).",
        "The shim: 1 process, rendered-image cache off (the decoded-master cache at its default),",
        "`http` backend over nginx for the JPEG, `files` for the pyramidal TIFF; "
        f"{2 * b.cpus} connections. The reference",
        "implementation (`iiif_testserver.py --manipulators pil`) and Thumbor (file loader, no",
        "result storage) run one process each; iiif-processor runs in one Node process",
        "(`bench/iiif-processor-server.js`, libvips threads as sharp sets them). Each server",
        "uses its own JPEG encoder defaults (Thumbor writes progressive JPEG).",
    ]
    if not b.features.vips:
        fig.lines += ["", "This build has no `imaging.engine: vips`: only the Pillow engine ran."]
    for source, res in results.items():
        fig.lines += [
            "",
            f"**{source}** ({'`http` over nginx' if source == 'jpeg' else '`files`'})",
            "",
        ]
        fig.lines += table(res, len(crops))
        for e in engines(b):
            ours = med(res[f"shim {e}"])
            verdict(
                fig,
                f"{source} {e} / reference",
                ratio(ours, med(res["reference (iiif, PIL)"])),
                1.0,
                "> 1x",
            )
            verdict(fig, f"{source} {e} / Thumbor", ratio(ours, med(res["Thumbor"])), 1.0, "> 1x")
            target = 1 / 1.5 if e == "vips" else None
            verdict(
                fig,
                f"{source} {e} / iiif-processor",
                ratio(ours, med(res["iiif-processor"])),
                target,
                ">= 0.67x (within 1.5x)" if target else "none (Pillow engine)",
            )
        if not b.features.vips:
            fig.verdicts.append(
                (f"{source} vips / iiif-processor", ">= 0.67x", "not measured", "**no**")
            )
    fig.raw = {s: {k: [asdict(r) for r in v] for k, v in res.items()} for s, res in results.items()}
    return fig


def access_lines(iip: IipServer) -> int:
    """Requests in lighttpd's access log, once it has stopped growing (it writes each second)."""
    count, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 2.5:
        time.sleep(0.25)
        text = iip.access_log.read_text() if iip.access_log.exists() else ""
        now = len(text.splitlines())
        if now != count:
            count, stable_since = now, time.monotonic()
    return count


def backend_calls(shim: Shim) -> float:
    """``iiif_shim_backend_requests`` summed from the shim's /metrics (its one process)."""
    with urllib.request.urlopen(f"{shim.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("iiif_shim_backend_requests_total{")
    )


def fig_scale(b: Bench) -> Figure:
    fig = Figure("3", "Scale: processes, and two shims sharing one Redis")
    crops = osd_sweep(512)
    counts = sorted({1, 2, b.cpus}) if b.features.processes else [1]
    shims: list[Shim] = []
    nginx = start_nginx(b.jpegs, b.work / "nginx3")
    try:
        for n in counts:
            shims.append(b.shim(f"p{n}", pillow_backends(nginx, b), image_bytes=0, processes=n))
        contestants = [
            Contestant(
                f"{n} process{'es' if n > 1 else ''}", s.url, iiif_paths("/iiif/3/jpeg", crops, 3)
            )
            for n, s in zip(counts, shims, strict=True)
        ]
        results = b.rounds(contestants, max(b.args.connections, 4 * b.cpus))
    finally:
        for s in shims:
            s.stop()
        nginx.stop()
    fig.lines += [
        "The JPEG sweep of figure 2 (`http` over nginx, rendered-image cache off), "
        f"{max(b.args.connections, 4 * b.cpus)} connections.",
    ]
    if not b.features.processes:
        fig.lines += ["", "This build has no `server.processes`: one process only."]
    fig.lines += ["", *table(results, len(crops))]
    one = med(results[contestants[0].name])
    for c in contestants[1:]:
        verdict(
            fig, f"{c.name} / 1 process", ratio(med(results[c.name]), one), None, "none (reported)"
        )
    fig.raw = {"processes": {k: [asdict(r) for r in v] for k, v in results.items()}}

    fig.lines += ["", "**Two shims, one Redis** (`iip` backend, IIIF 2.1 sweep of figure 1)", ""]
    if not b.features.redis:
        fig.lines += ["This build has no `cache.redis`: not measured."]
        fig.verdicts.append(
            ("second shim's first pass from Redis", "0 backend requests", "not measured", "**no**")
        )
        return fig
    sweep = osd_sweep(256)
    paths = [p.lstrip("/") for p in iiif_paths("/iiif/2/chart", sweep, 2)]
    redis = start_redis(b.work / "redis")
    iip = IipServer(b.tiffs, b.dir("iip3"), ready="chart.tif")
    shims = []
    try:
        url = f"redis://127.0.0.1:{redis.port}/0"
        shims.append(b.shim("redis-a", iip_backend(iip), redis=url))
        shims.append(b.shim("redis-b", iip_backend(iip), redis=url))
        passes = []
        for label, s in zip(("first shim", "second shim"), shims, strict=True):
            before = access_lines(iip)
            run = asyncio.run(tiles.run(s.url, paths, 4))
            passes.append((label, run.seconds, access_lines(iip) - before, backend_calls(s)))
    finally:
        for s in shims:
            s.stop()
        iip.stop()
        redis.stop()
    fig.lines += [
        "| shim | first pass (s) | requests | backend requests: lighttpd log | shim /metrics |",
        "|---|---|---|---|---|",
        *(
            f"| {n} | {sec:.2f} | {len(paths)} | {count} | {calls:.0f} |"
            for n, sec, count, calls in passes
        ),
        "",
        "The shim's own count (`iiif_shim_backend_requests_total`) includes its background",
        "health checks; lighttpd writes its log lazily, so its count may lag.",
    ]
    first, got = passes[0][3], passes[1][3]
    fig.verdicts.append(
        (
            "second shim's first pass from Redis",
            "backend requests <= 2% of the first shim's",
            f"{got:.0f} of {first:.0f}",
            "yes" if got <= max(1.0, first / 50) else "**no**",
        )
    )
    fig.raw["redis"] = passes
    return fig


def fig_loop(b: Bench) -> Figure:
    fig = Figure("4", "Event-loop health: a cached info.json while tiles render on every core")
    crops = osd_sweep(512)
    nginx = start_nginx(b.jpegs, b.work / "nginx4")
    shim = b.shim("loop", pillow_backends(nginx, b), image_bytes=0, processes=None)
    info = "/iiif/3/jpeg/info.json"
    try:
        asyncio.run(
            tiles.run(
                shim.url,
                [info.lstrip("/")] + [x.lstrip("/") for x in iiif_paths("/iiif/3/jpeg", crops, 3)],
                4,
            )
        )
        idle = load.wrk(shim.url, [info], b.args.seconds, 1)
        loaded: dict[str, Run] = {}
        seconds = 2 * b.args.seconds
        tile_load = threading.Thread(
            target=lambda: loaded.setdefault(
                "tiles",
                load.wrk(
                    shim.url, iiif_paths("/iiif/3/jpeg", crops, 3), seconds + 2, 4 * b.cpus, 2
                ),
            )
        )
        tile_load.start()
        time.sleep(1.5)
        busy = load.wrk(shim.url, [info], seconds, 1)
        tile_load.join()
    finally:
        shim.stop()
        nginx.stop()
    tiles_run = loaded["tiles"]
    procs = "one per CPU" if b.features.processes else "1 process"
    fig.lines += [
        f"The shim ({procs}, rendered-image cache off) renders the JPEG sweep with "
        f"{4 * b.cpus} connections (wrk, {seconds + 2:.0f} s: {tiles_run.rps:.1f} tiles/s) while",
        f"one more connection asks for info.json for {seconds:.0f} s (wrk --latency).",
        "",
        "| info.json | req/s | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r.rps:.0f} | {r.latency_ms.get('50', 0):.2f} "
            f"| {r.latency_ms.get('90', 0):.2f} "
            f"| {r.latency_ms.get('99', 0):.2f} |"
            for name, r in (("idle", idle), ("under tile load", busy))
        ),
    ]
    p99 = busy.latency_ms.get("99", float("inf"))
    fig.verdicts.append(
        ("info.json p99 under load", "< 25 ms", f"{p99:.1f} ms", "yes" if p99 < 25 else "**no**")
    )
    fig.bars.append(Bar("4. info.json p99: 25 ms / measured", 25 / p99 if p99 else HIGH_RATIO, 1.0))
    fig.raw = {"idle": asdict(idle), "busy": asdict(busy), "tiles": asdict(tiles_run)}
    return fig


HIGH_RATIO = 100.0


def fig_memory(b: Bench) -> Figure:
    fig = Figure("5", "Memory: a 20000x15000 source, 16 clients, against the budget")
    huge = ROOT / "bench" / "huge.py"
    if not huge.exists():
        fig.lines += ["`bench/huge.py` is not in this build: not measured."]
        fig.verdicts.append(("peak RSS within budget", "<= budget", "not measured", "**no**"))
        return fig
    args = [sys.executable, str(huge)]
    helptext = subprocess.run([*args, "--help"], capture_output=True, text=True, timeout=60).stdout
    if b.args.quick and "--quick" in helptext:
        args.append("--quick")
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT)
    took = time.monotonic() - started
    output = (done.stdout + done.stderr).strip()
    shown = shlex.join(
        [
            ".venv/bin/python",
            *(str(Path(a).relative_to(ROOT)) if a == str(huge) else a for a in args[1:]),
        ]
    )
    fig.lines += [
        f"`{shown}` (exit {done.returncode}, {took:.0f} s):",
        "",
        "```",
        *output.splitlines()[-40:],
        "```",
    ]
    rows = []
    for line in output.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and {"peak_hwm_mb", "budget_mb"} <= row.keys():
            rows.append(row)
    for row in rows:
        # the budget bounds decoded pixels of requests; the decoded-source cache comes on top
        allowed = row["budget_mb"] + row.get("decoded_cache_mb", 0)
        over = row.get("over_rest_mb", row["peak_hwm_mb"])
        fig.verdicts.append(
            (
                f"{row.get('source', '?')}: peak RSS over rest",
                f"<= budget + decoded cache ({allowed} MB)",
                f"{over} MB (peak {row['peak_hwm_mb']} MB)",
                "yes" if done.returncode == 0 and over <= allowed else "**no**",
            )
        )
    if not rows:
        fig.verdicts.append(
            ("peak RSS within budget", "<= budget", f"exit {done.returncode}, see output", "**no**")
        )
    fig.raw = {"returncode": done.returncode, "output": output}
    return fig


def fig_cost(b: Bench) -> Figure:
    fig = Figure("6", "Cost: CPU time per request")
    n = (500 if b.args.quick else 4000) // b.args.connections * b.args.connections
    tile = next(c for c in osd_sweep(256) if c.sw == c.w and c.w == 256)
    path = iiif_paths("", [tile], 2)[0]
    iip = IipServer(b.tiffs, b.dir("iip6"), ready="chart.tif")
    shims: list[Shim] = []
    per: dict[str, list[float]] = {
        "iipsrv+lighttpd, direct IIIF": [],
        "shim passthrough": [],
        "shim cached hit": [],
    }
    try:
        shims.append(
            b.shim("passthrough", iip_backend(iip, ", tile_cache_bytes: 0"), image_bytes=0)
        )
        shims.append(b.shim("cached", iip_backend(iip)))
        targets: list[tuple[str, str, Callable[[], list[int]]]] = [
            (
                "iipsrv+lighttpd, direct IIIF",
                f"{iip.url}/iiif/chart.tif{path}",
                lambda: [iip.iipsrv.proc.pid, iip.lighttpd.proc.pid],
            ),
            ("shim passthrough", f"{shims[0].url}/iiif/2/chart{path}", lambda: [shims[0].pid]),
            ("shim cached hit", f"{shims[1].url}/iiif/2/chart{path}", lambda: [shims[1].pid]),
        ]
        for _, url, _pids in targets:
            load.hey(url, 20, 2)
        for r in range(b.args.rounds):
            for name, url, pids in targets if r % 2 == 0 else targets[::-1]:
                before = load.cpu_seconds(pids())
                run = load.hey(url, n, b.args.connections)
                used = load.cpu_seconds(pids()) - before
                if run.errors:
                    raise RuntimeError(f"{name}: {run.errors} of {n} failed")
                per[name].append(used / n * 1e6)
                print(f"  round {r + 1} {name}: {used / n * 1e6:.0f} us/request", flush=True)
    finally:
        for s in shims:
            s.stop()
        iip.stop()
    fig.lines += [
        f"{n} requests of one full-resolution 256-px tile (`{path}`) per round with "
        f"`hey -n {n} -c {b.args.connections}`; CPU time (user + system, clock ticks of "
        f"{1000 / load.TICK:.0f} ms) of every process of the server, from /proc, divided by the",
        "requests. The shim runs 1 process with its default access log; *passthrough* has every",
        "cache off (each request is one `JTL` to iipsrv), *cached hit* is served from memory.",
        "",
        "| server | CPU us/request (median) | rounds |",
        "|---|---|---|",
        *(
            f"| {k} | {statistics.median(v):.0f} | {', '.join(f'{x:.0f}' for x in v)} |"
            for k, v in per.items()
        ),
    ]
    direct = statistics.median(per["iipsrv+lighttpd, direct IIIF"])
    for k in ("shim passthrough", "shim cached hit"):
        ours = statistics.median(per[k])
        fig.verdicts.append((f"{k}: CPU us/request", "reported", f"{ours:.0f} us", "-"))
        fig.bars.append(
            Bar(f"6. CPU per request: iipsrv / {k}", direct / ours if ours else HIGH_RATIO)
        )
    fig.raw = per
    return fig


RUNNERS: dict[str, Callable[[Bench], Figure]] = {
    "passthrough": fig_passthrough,
    "pillow": fig_pillow,
    "scale": fig_scale,
    "loop": fig_loop,
    "memory": fig_memory,
    "cost": fig_cost,
}


def versions() -> list[str]:
    def cmd(args: list[str]) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=30)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    def pkg(*names: str) -> str:
        for name in names:
            done = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True
            )
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        return "?"

    def node_pkg(name: str) -> str:
        return str(json.loads((NODE_MODULES / name / "package.json").read_text())["version"])

    try:
        iiifp = f"iiif-processor {node_pkg('iiif-processor')} (sharp {node_pkg('sharp')})"
    except OSError:
        iiifp = "iiif-processor: not installed"
    thumbor = cmd(
        [
            str(ROOT / ".venv-thumbor" / "bin" / "python"),
            "-c",
            "import thumbor; print(thumbor.__version__)",
        ]
    )
    return [
        f"iipsrv {pkg('iipimage-server')}, lighttpd {pkg('lighttpd')}, "
        f"nginx {pkg('nginx-light', 'nginx-core', 'nginx')}",
        f"Thumbor {thumbor}, reference `iiif` 1.0.10, {iiifp}, Node {cmd(['node', '--version'])}",
        f"clients: wrk {pkg('wrk')}, hey {pkg('hey')}; Pillow {pkg_py('PIL')}",
    ]


def pkg_py(module: str) -> str:
    mod = __import__(module)
    return str(getattr(mod, "__version__", "?"))


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // (1024 * 1024)
    return (
        f"{model}, {os.cpu_count()} CPUs, {mem} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def kept_sections(out: Path) -> str:
    """The sections other bench scripts wrote into ``out`` (between ``<!-- bench/NAME -->``
    and ``<!-- /bench/NAME -->``, e.g. bench/pdf.py's), carried over when it is written again."""
    old = out.read_text() if out.exists() else ""
    found = re.finditer(r"<!-- (bench/[\w.]+) -->.*?<!-- /\1 -->", old, re.DOTALL)
    return "".join(f"\n{match.group(0)}\n" for match in found)


def commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        ).stdout.strip()
        return rev + (" with uncommitted changes" if dirty else "")
    except OSError:
        return "?"


NOTES = Path(__file__).with_name("notes.md")


def report(
    args: argparse.Namespace,
    features: Features,
    figures: list[Figure],
    took: float,
    profiles: list[Path],
) -> None:
    command = "bash bench/perf.sh" + ("" if not args.argv else " " + shlex.join(args.argv))
    lines = [
        "# Performance",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')} in {took / 60:.1f} minutes "
        f"(commit {commit()}). See `bench/perf.py` for the method.",
        "",
        f"- Machine: {machine()}. Every server and client shares it: compare ratios, "
        "not absolutes.",
        *(f"- {v}" for v in versions()),
        f"- Shim features: {features.describe()}.",
        f"- {args.rounds} alternating rounds of {args.seconds:g} s per contestant, "
        f"{args.connections} connections unless said; medians, and ratios of medians.",
    ]
    if args.quick:
        lines += [
            "- **Quick run** (`--quick`): checks the harness, the numbers are not meaningful."
        ]
    lines += [
        "",
        "Each figure's sweep: every tile OpenSeadragon asks while zooming fully into the",
        "6000x4000 chart at one point in a 1280x800 viewer (every level), plus 128, 256 and",
        "512-px thumbnails;",
        "wrk (`bench/sweep.lua`) cycles through it.",
        "",
        "## Targets",
        "",
        "| figure | measure | target | result | met |",
        "|---|---|---|---|---|",
    ]
    for fig in figures:
        lines += [f"| {fig.key} | {w} | {t} | {g} | {m} |" for w, t, g, m in fig.verdicts]
    lines += ["", "![iiif-shim against each peer](performance.png)", ""]
    if NOTES.exists():  # what the figures mean, and where a target is missed, why
        lines += [NOTES.read_text().strip(), ""]
    for fig in figures:
        lines += [f"## {fig.key}. {fig.title}", "", *fig.lines, ""]
    lines += [
        "## Profiling",
        "",
        "`bash bench/perf.sh FIGURE --profile` records every shim of that figure with py-spy",
        "(`--subprocesses`) while it runs and writes its stacks (collapsed, for any flame-graph",
        "tool) to `bench/out/profile-FIGURE-NAME.txt`; below, the frames most often on the",
        "event loop's stack (share of the loop thread's samples).",
    ]
    for path in profiles:
        total, rows, packages = load.hot_frames(path)
        lines += [
            "",
            f"### `{path.relative_to(ROOT)}` ({total} loop samples)",
            "",
            "The loop's own time by package: "
            + ", ".join(f"{name} {share:.0%}" for share, name in packages)
            + ".",
            "",
            "| share | frame |",
            "|---|---|",
            *(f"| {share:.0%} | `{frame[:110]}` |" for share, frame in rows),
        ]
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n" + kept_sections(out))
    bars = [bar for fig in figures for bar in fig.bars]
    draw(
        bars,
        f"iiif-shim side by side ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)",
        out.with_suffix(".png"),
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("figures", nargs="*", help="1-6 or their names; none: all")
    parser.add_argument("--quick", action="store_true", help="every figure briefly")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of the shims")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 8.0)
    chosen = []
    for f in args.figures or list(FIGURES):
        name = FIGURES.get(f, f)
        if name not in RUNNERS:
            parser.error(
                f"unknown figure {f!r}: choose from {', '.join(FIGURES)} or {', '.join(RUNNERS)}"
            )
        chosen.append(name)
    features = Features.detect()
    print(f"shim features: {features.describe()}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    figures: list[Figure] = []
    profiles: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="iiif-perf-") as tmp:
        bench = Bench(args, features, Path(tmp))
        for name in chosen:
            print(f"figure {name}", flush=True)
            bench.figure = name
            t0 = time.monotonic()
            try:
                figures.append(RUNNERS[name](bench))
            finally:
                profiles += bench.stop_profiles()
            print(f"figure {name}: {time.monotonic() - t0:.0f} s", flush=True)
    took = time.monotonic() - started
    (OUT / "perf.json").write_text(
        json.dumps({f.key: f.raw for f in figures}, indent=1, default=str)
    )
    report(args, features, figures, took, profiles)


if __name__ == "__main__":
    main()
