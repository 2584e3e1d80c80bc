"""Pillow vs libvips, step by step, on typical requests (a measurement, never a test).

    .venv/bin/python bench/engines.py [--rounds 15]

For each request, each engine runs every step in turn, the engines alternating round by round
(A/B, A/B, ...) so drift in the machine's load hits both; the table gives the median
milliseconds of each step and the ratio Pillow / vips (above 1: vips is faster). libvips is
lazy, so for the per-step figures each of its steps is forced into memory (``copy_memory``);
the ``all`` row is the engine's own one-call path (``render``, or ``decode`` then ``finish``),
with nothing forced. Both engines run on one thread, as each request does in the shim.

Times are CPU time of the whole process (``time.process_time``: libvips works in a thread of
its own), which a busy machine disturbs far less than wall time; wall-clock medians are given
next to them.

Requests:
  tile        a 512x512 tile at scale factor 2 (1024,1024,1024,1024/512,512) of a 6000x4000
              JPEG master: decode (at 1/2, kept in the decoded cache), then finish
  tile-warm   the next tile from the kept decode: finish only (what most tiles of a session cost)
  downscale   full/1000, of the same master: decode at 1/4, scale, encode
  pyramid-page  a region (2000,1500,1024,1024/512,) of a 6000x4000 pyramidal tiled TIFF, the
              file delivered whole: Pillow decodes the page and crops; vips reads the region
  pyramid     the same region delivered as a window of the page (``Fetched.window``, as the
              ``files`` backend delivers pyramidal TIFFs): both engines read only its tiles
  rotate      full/600,/30/default.png of the same master: the arbitrary-angle turn

Then each output format written from the same pixels, and whole sources of each input format
decoded, by each library.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyvips  # noqa: E402
from PIL import Image  # noqa: E402

from iiif_shim.iiif.profile import Format, Quality  # noqa: E402
from iiif_shim.iiif.resolve import Box  # noqa: E402
from iiif_shim.imaging import cost, pillow, vips  # noqa: E402
from iiif_shim.imaging.fetched import Fetched  # noqa: E402
from iiif_shim.model.plan import Steps  # noqa: E402

MASTER = ROOT / "iiif_shim" / "defaults" / "images" / "chart.jpg"  # 6000x4000 JPEG
OPEN = cost.Allowance(10**9, 1 << 34)
Timed = dict[str, Callable[[], Any]]


def pillow_steps(fetched: Fetched, factor: int, steps: Steps) -> Timed:
    state: dict[str, Any] = {}

    def decode() -> None:
        state["d"] = pillow.decode(fetched, factor, OPEN)

    def crop_scale() -> None:
        state["im"] = pillow.crop_and_scale(state["d"], steps)

    def turn() -> None:
        state["im"] = pillow.turn(state["im"], steps)

    def quality() -> None:
        state["im"] = pillow.apply_quality(state["im"], steps.quality)

    def encode() -> None:
        pillow.encode(state["im"], steps.format, steps.jpeg_quality)

    return {
        "decode": decode,
        "crop_scale": crop_scale,
        "turn": turn,
        "quality": quality,
        "encode": encode,
    }


def vips_steps(fetched: Fetched, factor: int, steps: Steps, window: bool) -> Timed:
    state: dict[str, Any] = {}
    engine = vips.VipsEngine(vips.EVERYTHING)

    def decode() -> None:
        if window:  # a region read: the window's tiles, decoded as the next step asks
            state["d"] = vips._open(fetched, factor, OPEN)
        else:
            state["d"] = engine.decode(fetched, factor, OPEN)

    def crop_scale() -> None:
        state["im"] = vips._crop_and_scale(state["d"], steps).copy_memory()

    def turn() -> None:
        state["im"] = vips._turn(state["im"], steps).copy_memory()

    def quality() -> None:
        im, state["bitonal"] = vips._quality(state["im"], steps.quality)
        state["im"] = im.copy_memory()

    def encode() -> None:
        vips._encode(state["im"], steps.format, steps.jpeg_quality, state["bitonal"])

    return {
        "decode": decode,
        "crop_scale": crop_scale,
        "turn": turn,
        "quality": quality,
        "encode": encode,
    }


def whole(engine: Any, fetched: Fetched, factor: int, steps: Steps, render: bool) -> Any:
    if render:
        return lambda: engine.render(fetched, steps, OPEN)
    return lambda: engine.finish(engine.decode(fetched, factor, OPEN), steps)


def warm(engine: Any, fetched: Fetched, factor: int, steps: Steps) -> Any:
    kept = engine.decode(fetched, factor, OPEN)
    return lambda: engine.finish(kept, steps)


def pyramid(folder: Path) -> Path:
    path = folder / "chart-pyramid.tif"
    pyvips.Image.new_from_file(str(MASTER)).tiffsave(
        str(path),
        tile=True,
        tile_width=256,
        tile_height=256,
        pyramid=True,
        compression="jpeg",
        Q=90,
    )
    return path


def run(rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    tif = pyramid(folder)
    jpeg = Fetched(path=MASTER, described="master")
    tile = Steps(Box(1024, 1024, 1024, 1024), (512, 512), False, 0, Quality.DEFAULT, Format.JPG)
    tile2 = Steps(Box(2048, 1024, 1024, 1024), (512, 512), False, 0, Quality.DEFAULT, Format.JPG)
    down = Steps(None, (1000, 667), False, 0, Quality.DEFAULT, Format.JPG)
    turn = Steps(None, (600, 400), False, 30, Quality.DEFAULT, Format.PNG)
    region = Steps(Box(2000, 1500, 1024, 1024), (512, 512), False, 0, Quality.DEFAULT, Format.JPG)
    tif_whole = Fetched(path=tif, described="pyramid")
    tif_window = Fetched(path=tif, described="pyramid", window=Box(2000, 1500, 1024, 1024))
    region_window = Steps(None, (512, 512), False, 0, Quality.DEFAULT, Format.JPG)
    ve = vips.VipsEngine(vips.EVERYTHING)
    vm = vips.VipsEngine(vips.MEASURED)

    class Pillow:  # the Pillow engine's one-call path, as engines.PillowEngine calls it
        decode = staticmethod(pillow.decode)
        finish = staticmethod(pillow.finish)
        render = staticmethod(pillow.render)

    requests: dict[str, tuple[Steps, Steps, Steps]] = {
        "tile": (
            {**pillow_steps(jpeg, 2, tile), "all": whole(Pillow, jpeg, 2, tile, False)},
            {**vips_steps(jpeg, 2, tile, False), "all": whole(ve, jpeg, 2, tile, False)},
            {"all": whole(vm, jpeg, 2, tile, False)},
        ),
        "tile-warm": (
            {"all": warm(Pillow, jpeg, 2, tile2)},
            {"all": warm(ve, jpeg, 2, tile2)},
            {"all": warm(vm, jpeg, 2, tile2)},
        ),
        "downscale": (
            {**pillow_steps(jpeg, 4, down), "all": whole(Pillow, jpeg, 4, down, False)},
            {**vips_steps(jpeg, 4, down, False), "all": whole(ve, jpeg, 4, down, False)},
            {"all": whole(vm, jpeg, 4, down, False)},
        ),
        "pyramid-page": (
            {
                **pillow_steps(tif_whole, 1, region),
                "all": whole(Pillow, tif_whole, 1, region, False),
            },
            {
                **vips_steps(tif_whole, 1, region, True),
                "all": whole(ve, tif_whole, 1, region, True),
            },
            {"all": whole(vm, tif_whole, 1, region, True)},
        ),
        "pyramid": (
            {
                **pillow_steps(tif_window, 1, region_window),
                "all": whole(Pillow, tif_window, 1, region_window, True),
            },
            {
                **vips_steps(tif_window, 1, region_window, True),
                "all": whole(ve, tif_window, 1, region_window, True),
            },
            {"all": whole(vm, tif_window, 1, region_window, True)},
        ),
        "rotate": (
            {**pillow_steps(jpeg, 4, turn), "all": whole(Pillow, jpeg, 4, turn, False)},
            {**vips_steps(jpeg, 4, turn, False), "all": whole(ve, jpeg, 4, turn, False)},
            {"all": whole(vm, jpeg, 4, turn, False)},
        ),
    }
    print(f"# Pillow {Image.__version__} vs libvips {vips_version()}: median ms of {rounds} rounds")
    print()
    print(
        "| request | step | Pillow CPU ms | vips (all steps) CPU ms | Pillow / vips "
        "| vips (measured) CPU ms | Pillow / measured | wall ms (P / v / m) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, sides in requests.items():
        cpu: dict[str, list[list[float]]] = {s: [[], [], []] for s in sides[0]}
        wall: dict[str, list[list[float]]] = {s: [[], [], []] for s in sides[0]}
        for _ in range(rounds):
            for side, steps in enumerate(sides):
                for step, call in steps.items():
                    started, ticks = time.perf_counter(), time.process_time()
                    call()
                    cpu[step][side].append(time.process_time() - ticks)
                    wall[step][side].append(time.perf_counter() - started)
        for step, times in cpu.items():
            ma, mb, mc = (statistics.median(t) * 1000 if t else 0.0 for t in times)
            wa, wb, wc = (statistics.median(t) * 1000 if t else 0.0 for t in wall[step])
            ratio = f"{ma / mb:.2f}" if mb > 0.05 else "-"
            measured = f"{mc:.1f} | {ma / mc:.2f}" if mc > 0.05 else "- | -"
            print(
                f"| {name} | {step} | {ma:.1f} | {mb:.1f} | {ratio} | {measured} "
                f"| {wa:.1f} / {wb:.1f} / {wc:.1f} |"
            )
    formats(rounds, folder)
    shutil.rmtree(folder, ignore_errors=True)


def formats(rounds: int, folder: Path) -> None:
    """Each output format written from the same 1000x667 RGB pixels, and whole sources of each
    input format decoded into memory: by Pillow, by libvips."""
    pil = Image.open(MASTER)
    pil.draft("RGB", (1500, 1000))
    pixels = pil.convert("RGB").resize((1000, 667))
    vimage = vips._from_pil(pixels).copy_memory()
    half = pyvips.Image.new_from_file(str(MASTER), shrink=2)
    sources = {"JPEG 6000x4000": MASTER, "JPEG 2000 2400x1600": MASTER.parent / "rings.jp2"}
    for name, suffix in (("PNG 3000x2000", ".png"), ("TIFF 3000x2000 (deflate)", ".tif")):
        path = folder / f"source{suffix}"
        if suffix == ".png":
            half.pngsave(str(path))
        else:
            half.tiffsave(str(path), compression="deflate")
        sources[name] = path
    engine = vips.VipsEngine(vips.EVERYTHING)
    rows: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {}
    for fmt in Format:
        rows[f"write {fmt.value}"] = (
            lambda fmt=fmt: pillow.encode(pixels, fmt, 85),
            (lambda fmt=fmt: vips._encode(vimage, fmt, 85, False))
            if fmt in vips.VIPS_WRITES
            else None,
        )
    for name, path in sources.items():
        fetched = Fetched(path=path, described=name)
        rows[f"decode {name}"] = (
            lambda f=fetched: pillow.decode(f, 1, OPEN),
            lambda f=fetched: engine.decode(f, 1, OPEN),
        )
    print()
    print("| step | Pillow CPU ms | vips CPU ms | Pillow / vips |")
    print("|---|---:|---:|---:|")
    for name, (a, b) in rows.items():
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            for side, call in enumerate((a, b)):
                if call is None:
                    continue
                ticks = time.process_time()
                call()
                times[side].append(time.process_time() - ticks)
        ma = statistics.median(times[0]) * 1000
        if not times[1]:
            print(f"| {name} | {ma:.1f} | (Pillow writes it) | - |")
            continue
        mb = statistics.median(times[1]) * 1000
        print(f"| {name} | {ma:.1f} | {mb:.1f} | {ma / mb:.2f} |")


def vips_version() -> str:
    return ".".join(str(pyvips.version(i)) for i in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
