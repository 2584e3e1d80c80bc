"""The cost model against measured peaks (a measurement; ``tests/unit/test_cost_model.py``
asserts a few of its cases).

    .venv/bin/python bench/cost_model.py [--quick] [--engines pillow,vips,vips-all] [--markdown]

For each case of a matrix of requests (sizes, arbitrary angles, 90, mirror, formats in and out,
modes L/RGB/RGBA/1/16-bit, reductions) and each engine (``pillow``; ``vips`` with its default
``measured`` steps; ``vips-all``, libvips for every step it can), a fresh Python process does
what a server process does for that request of a ``files`` master: the master's facts from its
header, the plan, the engine's cost, then decode and finish (or render, for a window of a tiled
TIFF) on one thread, with freed memory given back at once (``unmap_large_blocks``, as a server
process does). It first warms up (the same request on a small copy of the master, so that every
codec and library is loaded), takes its resident size as the baseline, resets the kernel's
high-water mark (``/proc/self/clear_refs``), does the work and reads ``VmHWM``: the measured
peak is that high-water mark minus the baseline, C allocations included (tracemalloc sees only
Python's). The table gives estimate / measured for each; the model should be between 1.0 and 1.3
(never under: an estimate under the peak lets a burst take more memory than the budget), or at
most :data:`SMALL` over the peak where a few MB of fixed buffers make the ratio of two small
numbers say little (:func:`within`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024
SMALL = 4 * MB  # an estimate this much over its peak is close enough, whatever the ratio


def within(estimate: int, measured: int) -> bool:
    """The model's rule: never under the peak, and at most 1.3 times it or :data:`SMALL` over
    it (a small output's peak is mostly fixed buffers: a ratio of two small numbers)."""
    return measured <= estimate <= max(1.3 * measured, measured + SMALL)


MASTER = ROOT / "iiif_shim" / "defaults" / "images" / "chart.jpg"  # 6000x4000 JPEG


@dataclass(frozen=True)
class Case:
    source: str  # a file made by make_sources
    path: str  # region/size/rotation/quality.format


_J2K: dict[str, Any] = {
    "irreversible": True,
    "quality_mode": "rates",
    "quality_layers": [20],
    "num_resolutions": 6,
}

# sources: name -> (mode, size, Pillow format, save options)
SOURCES: dict[str, tuple[str, tuple[int, int], str, dict[str, Any]]] = {
    "rgb-24mp.jpg": ("RGB", (6000, 4000), "JPEG", {"quality": 90}),
    "l-24mp.jpg": ("L", (6000, 4000), "JPEG", {"quality": 90}),
    "rgb-6mp.png": ("RGB", (3000, 2000), "PNG", {"compress_level": 1}),
    "rgba-6mp.png": ("RGBA", (3000, 2000), "PNG", {"compress_level": 1}),
    "l-6mp.png": ("L", (3000, 2000), "PNG", {"compress_level": 1}),
    "1-6mp.png": ("1", (3000, 2000), "PNG", {}),
    "i16-6mp.png": ("I;16", (3000, 2000), "PNG", {}),
    "rgb-6mp.tif": ("RGB", (3000, 2000), "TIFF", {"compression": "tiff_deflate"}),
    "rgb-6mp.webp": ("RGB", (3000, 2000), "WEBP", {"quality": 85}),
    "rgb-tiled-24mp.tif": ("RGB", (6000, 4000), "VIPS", {}),  # pyramidal, tiled (vips)
    # JPEG 2000 as archives write it: lossy, 6 resolution levels, one tile or 1024x1024 tiles;
    # 512x512 tiles (as libvips' jp2ksave writes them), 256x256 tiles on a 48 MP master (744 of
    # them) and 64x64 on a 6 MP one (1,504): OpenJPEG sets up every tile before decoding any
    "rgb-24mp.jp2": ("RGB", (6000, 4000), "JPEG2000", _J2K),
    "rgb-tiled-24mp.jp2": ("RGB", (6000, 4000), "JPEG2000", {**_J2K, "tile_size": (1024, 1024)}),
    "rgb-t512-24mp.jp2": ("RGB", (6000, 4000), "JPEG2000", {**_J2K, "tile_size": (512, 512)}),
    "rgb-t256-48mp.jp2": ("RGB", (8000, 6000), "JPEG2000", {**_J2K, "tile_size": (256, 256)}),
    "rgb-t64-6mp.jp2": ("RGB", (3000, 2000), "JPEG2000", {**_J2K, "tile_size": (64, 64)}),
    "l-24mp.jp2": ("L", (6000, 4000), "JPEG2000", _J2K),
    "l-tiled-24mp.jp2": ("L", (6000, 4000), "JPEG2000", {**_J2K, "tile_size": (1024, 1024)}),
}

QUICK = [
    Case("rgb-24mp.jpg", "full/max/0/default.jpg"),
    Case("rgb-24mp.jpg", "full/max/37/default.jpg"),
    Case("rgb-24mp.jpg", "full/max/90/default.jpg"),
    Case("rgb-24mp.jpg", "full/max/!0/default.jpg"),
    Case("rgb-24mp.jpg", "full/1500,/0/default.jpg"),
    Case("rgba-6mp.png", "full/max/37/default.png"),
    Case("l-6mp.png", "full/max/37/default.jpg"),
    Case("i16-6mp.png", "full/max/0/default.png"),
]

FULL = [
    *QUICK,
    Case("rgb-24mp.jpg", "full/max/180/default.jpg"),
    Case("rgb-24mp.jpg", "full/max/!37/default.jpg"),
    Case("rgb-24mp.jpg", "full/max/37/default.png"),
    Case("rgb-24mp.jpg", "full/max/37/default.webp"),
    Case("rgb-24mp.jpg", "full/max/0/default.png"),
    Case("rgb-24mp.jpg", "full/max/0/default.tif"),
    Case("rgb-24mp.jpg", "full/max/0/default.webp"),
    Case("rgb-24mp.jpg", "full/max/0/gray.jpg"),
    Case("rgb-24mp.jpg", "full/max/0/bitonal.png"),
    Case("rgb-24mp.jpg", "full/3000,/0/default.jpg"),
    Case("rgb-24mp.jpg", "full/750,/37/default.jpg"),
    Case("rgb-24mp.jpg", "1000,1000,2000,2000/max/0/default.jpg"),
    Case("rgb-24mp.jpg", "1000,1000,2000,2000/500,/0/default.jpg"),
    Case("l-24mp.jpg", "full/max/37/default.jpg"),
    Case("l-24mp.jpg", "full/max/0/default.png"),
    Case("rgb-6mp.png", "full/max/37/default.jpg"),
    Case("rgb-6mp.png", "full/max/0/default.webp"),
    Case("rgb-6mp.png", "full/max/0/default.jp2"),
    Case("rgb-6mp.png", "full/max/0/default.gif"),
    Case("rgb-6mp.png", "full/max/0/default.pdf"),
    Case("rgba-6mp.png", "full/max/0/default.jpg"),
    Case("1-6mp.png", "full/max/37/default.png"),
    Case("1-6mp.png", "full/max/0/bitonal.png"),
    Case("i16-6mp.png", "full/max/37/default.jpg"),
    Case("rgb-6mp.tif", "full/max/37/default.jpg"),
    Case("rgb-6mp.tif", "full/max/0/default.tif"),
    Case("rgb-6mp.webp", "full/max/37/default.webp"),
    Case("rgb-6mp.webp", "full/max/90/default.jpg"),
    Case("rgb-tiled-24mp.tif", "1000,1000,2000,2000/max/0/default.jpg"),
    Case("rgb-tiled-24mp.tif", "full/1500,/0/default.jpg"),
    Case("rgb-tiled-24mp.tif", "0,0,3000,3000/1500,/0/default.jpg"),
    Case("rgb-tiled-24mp.tif", "1000,1000,2000,2000/max/37/default.png"),
    *(
        Case(master, path)
        for master in ("rgb-24mp.jp2", "rgb-tiled-24mp.jp2", "l-24mp.jp2", "l-tiled-24mp.jp2")
        for path in (
            "full/max/0/default.jpg",
            "full/max/37/default.jpg",
            "full/1500,/0/default.jpg",
            "full/375,/0/default.jpg",
            "1000,1000,2000,2000/max/0/default.jpg",
        )
    ),
    *(
        Case(master, path)
        for master in ("rgb-t512-24mp.jp2", "rgb-t256-48mp.jp2", "rgb-t64-6mp.jp2")
        for path in (
            "full/max/0/default.jpg",
            "full/2000,/0/default.jpg",
            "full/500,/0/default.jpg",
        )
    ),
]

ENGINES = ("pillow", "vips", "vips-all")


def make_sources(folder: Path, names: set[str]) -> None:
    """The masters of the matrix, from the shipped 6000x4000 JPEG with a photograph's grain
    added (flat drawings compress far better than photographs), and a small copy of each for
    warming up."""
    from PIL import Image

    chart = Image.open(MASTER).convert("RGB")
    # grain, as a photograph has: encoders then write what a real master's pixels cost them
    grain = Image.merge("RGB", [Image.effect_noise(chart.size, 64) for _ in range(3)])
    chart = Image.blend(chart, grain, 0.12)
    del grain
    for name in names:
        mode, size, fmt, options = SOURCES[name]
        if (folder / name).exists():
            continue
        im = chart.resize(size) if size != chart.size else chart
        small = im.resize((64, 48))
        for image, target in ((im, folder / name), (small, folder / f"small-{name}")):
            if mode == "I;16":
                image = image.convert("L").point(lambda v: v * 257, "I").convert("I;16")
            elif mode == "RGBA":
                alpha = image.convert("L").point(lambda v: 255 - v // 2)
                image = image.convert("RGB")
                image.putalpha(alpha)
            else:
                image = image.convert(mode)
            if fmt == "VIPS":
                import pyvips

                plain = target.with_suffix(".plain.tif")
                image.save(plain, "TIFF")
                pyvips.Image.new_from_file(str(plain)).tiffsave(
                    str(target), tile=True, pyramid=True, tile_width=256, tile_height=256
                )
                plain.unlink()
            elif fmt == "JPEG2000" and target.name.startswith("small-"):  # one tile, 4 levels
                image.save(target, fmt, **{**options, "tile_size": None, "num_resolutions": 4})
            else:
                image.save(target, fmt, **options)


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]


def one(source: Path, small: Path, path: str, engine_name: str) -> dict[str, Any]:
    """In this (fresh) process: the request's estimate and its measured peak."""
    import gc

    from iiif_shim.core.planner import plan
    from iiif_shim.iiif.profile import Version
    from iiif_shim.iiif.request import parse_image_request
    from iiif_shim.iiif.resolve import Limits, resolve
    from iiif_shim.imaging import cost
    from iiif_shim.imaging.budget import unmap_large_blocks
    from iiif_shim.imaging.fetched import Fetched
    from iiif_shim.imaging.pillow import PillowEngine, read_header
    from iiif_shim.imaging.tiff import tiff_pyramid
    from iiif_shim.model.facts import PyramidFacts, SourceInfo
    from iiif_shim.model.plan import Capabilities

    unmap_large_blocks()
    if engine_name == "pillow":
        engine: Any = PillowEngine()
    else:
        from iiif_shim.imaging import vips

        engine = vips.VipsEngine(vips.EVERYTHING if engine_name == "vips-all" else vips.MEASURED)

    def run(master: Path) -> tuple[int, int]:
        header = read_header(Fetched(path=master, described="bench"), master.stat().st_size)
        width, height, fmt = header.width, header.height, header.format
        native = tiff_pyramid(master) if fmt == "TIFF" else None
        levels = native.pyramid.levels if native else ()
        info = SourceInfo(  # as the files backend reports them
            width,
            height,
            header.colour,
            fmt,
            header.mode,
            tiles=native.pyramid.grid if native and len(levels) > 1 else None,
            native=native,
            codestream=header.codestream,
        )
        caps = (
            Capabilities(region=True, reductions=len(levels) > 1)
            if isinstance(native, PyramidFacts)
            else Capabilities()
        )
        region, size, rotation, qf = path.split("/")
        if master != source:  # the warm-up: the same operations on the small copy
            region = "full" if region != "full" else region
            size = "max"
        request = parse_image_request(Version.V3, "id", region, size, rotation, qf)
        the_plan = plan(resolve(request, width, height, Limits()), caps, info.tiles)
        estimate = engine.cost(the_plan, info)
        if the_plan.native.whole_source(width, height):
            factor = engine.reduction(fmt, width, height, the_plan.steps)
            allowance = cost.Allowance(10**10, estimate.decode, (width, height))
            decoded = engine.decode(Fetched(path=master, described="bench"), factor, allowance)
            body = engine.finish(decoded, the_plan.steps)
            del decoded
        else:
            pyramid = native.pyramid  # type: ignore[union-attr]
            level = pyramid.level(the_plan.native.reduction)
            x0, y0, x1, y1 = pyramid.window(the_plan.native.region, level)
            from iiif_shim.iiif.resolve import Box

            fetched = Fetched(
                path=master,
                described="bench",
                page=pyramid.levels.index(level),
                window=Box(x0, y0, x1 - x0, y1 - y0),
            )
            allowance = cost.Allowance(10**10, estimate.decode, the_plan.native.delivered_size())
            body = engine.render(fetched, the_plan.steps, allowance)
        return estimate.total, len(body)

    run(small)
    run(small)
    gc.collect()
    before = _status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again here
    estimate, size = run(source)
    peak = _status()["VmHWM"] - before
    return {"estimate": estimate, "measured": peak, "bytes": size}


def measure(folder: Path, case: Case, engine: str) -> dict[str, Any]:
    """``one`` in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(folder / case.source), case.path, engine],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def table(rows: list[tuple[Case, str, dict[str, Any]]]) -> str:
    lines = [
        "| master | request | engine | output MB | estimate MB | measured peak MB "
        "| estimate / measured | within |",
        "|---|---|---|--:|--:|--:|--:|:-:|",
    ]
    for case, engine, r in rows:
        if "error" in r:
            lines.append(f"| {case.source} | `{case.path}` | {engine} | | | | {r['error']} | |")
            continue
        ratio = r["estimate"] / max(1, r["measured"])
        lines.append(
            f"| {case.source} | `{case.path}` | {engine} | {r['bytes'] / MB:.1f} | "
            f"{r['estimate'] / MB:.0f} | {r['measured'] / MB:.0f} | {ratio:.2f} | "
            f"{'yes' if within(r['estimate'], r['measured']) else '**no**'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--one", nargs=3, metavar=("MASTER", "PATH", "ENGINE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--quick", action="store_true", help="a few cases only")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--only", default="", help="cases whose master or path contain this")
    parser.add_argument("--folder", type=Path, help="keep the masters here (made once)")
    args = parser.parse_args()
    if args.one:
        master, path, engine = args.one
        source = Path(master)
        small = source.with_name(f"small-{source.name}")
        print(json.dumps(one(source, small, path, engine)))
        return
    cases = [c for c in (QUICK if args.quick else FULL) if args.only in f"{c.source}/{c.path}"]
    engines = [e for e in args.engines.split(",") if e]
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        make_sources(folder, {c.source for c in cases})
        rows = []
        for case in cases:
            for engine in engines:
                r = measure(folder, case, engine)
                rows.append((case, engine, r))
                if "error" in r:
                    print(f"{case.source} {case.path} {engine}: {r['error']}", flush=True)
                else:
                    ratio = r["estimate"] / max(1, r["measured"])
                    print(
                        f"{case.source:20} {case.path:40} {engine:9} {r['bytes'] / MB:6.1f} "
                        f"{r['estimate'] / MB:7.0f} {r['measured'] / MB:7.0f} {ratio:5.2f} "
                        f"{'' if within(r['estimate'], r['measured']) else 'OUT'}",
                        flush=True,
                    )
        print()
        for engine in engines:
            done = [(c, r) for c, e, r in rows if e == engine and "error" not in r]
            ok = sum(within(r["estimate"], r["measured"]) for _, r in done)
            ratios = [r["estimate"] / max(1, r["measured"]) for _, r in done]
            under = sum(r["estimate"] < r["measured"] for _, r in done)
            if ratios:
                print(
                    f"{engine}: {ok} of {len(done)} within, ratios {min(ratios):.2f} to "
                    f"{max(ratios):.2f}, {under} under"
                )
        print()
        print(table(rows))


if __name__ == "__main__":
    main()
