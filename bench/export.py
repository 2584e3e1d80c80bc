"""Export throughput: ``iiif-shim export`` against ``vips dzsave`` on one large image.

A large JPEG master (default 10000 x 8000, the bundled 6000 x 4000 chart scaled by libvips) is
written as a level-0 tile tree by both, with the same tile size (512), JPEG quality (the
shim's default, 85) and no overlap, each into a fresh folder:

- ``iiif-shim export --identifier big --api 3`` (default ``--jobs``; then ``--jobs 1``), ``--api
  2`` and ``--api both``, through a ``files`` backend with every other setting at its default;
- ``vips dzsave --layout iiif3`` (and ``--layout iiif`` for Image API 2), with libvips's own
  threads (and, beside ``--jobs 1``, with ``VIPS_CONCURRENCY=1``);
- the same image as a tiled pyramidal TIFF (``vips tiffsave --tile --pyramid``, JPEG Q90 in
  tiles of 512), which the shim reads by window, exported with ``--api 3`` and by ``vips
  dzsave --layout iiif3``.

Each run is timed by ``/usr/bin/time -v``: wall time, CPU time (user + system) and peak
resident memory (its maximum RSS). Counted in the folder afterwards: files (paths, hard links
included), distinct images (JPEG inodes: the shim links paths that hold the same pixels) and
bytes (each inode once). Images per second are distinct images over wall time. Medians of
``--rounds`` rounds, the runs of a round one after the other. The two do not write the same
set: vips writes the tiles and info.json; the shim also writes each ``sizes`` entry,
``full/max``, the aliases viewers ask for and, with ``both``, the 2.1 paths as links.

    .venv/bin/python bench/export.py [--rounds 3] [--width 10000 --height 8000] \\
        [--write docs/performance.md]

``--write`` replaces the part between ``<!-- bench/export.py -->`` and ``<!-- /bench/export.py
-->`` in the file (appending an "Export" section when missing). Not a test: it asserts only
that every run succeeded; tests/http/test_export.py and tests/validator/test_export_level0.py
check what is written.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import BUNDLED, need_tool, write_config  # noqa: E402

START, END = "<!-- bench/export.py -->", "<!-- /bench/export.py -->"
TIME = "/usr/bin/time"
QUALITY = 85  # iiif.jpeg_quality's default


@dataclass(frozen=True)
class Run:
    """One way of writing the tree."""

    name: str
    command: tuple[str, ...]  # {out} is replaced by the output folder
    env: tuple[tuple[str, str], ...] = ()
    compare: str | None = None  # the name of the vips run it is compared with


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    peak_mb: float
    files: int
    images: int
    bytes: int


def make_master(folder: Path, width: int, height: int) -> Path:
    """The chart scaled to ``width`` x ``height`` by libvips, as a JPEG of quality 90."""
    folder.mkdir(parents=True, exist_ok=True)
    master = folder / "big.jpg"
    chart = BUNDLED / "chart.jpg"
    hscale, vscale = width / 6000, height / 4000
    vips = need_tool("vips")
    args = [vips, "resize", str(chart), f"{master}[Q=90]", f"{hscale:.6f}", "--vscale"]
    subprocess.run([*args, f"{vscale:.6f}"], check=True, timeout=600)
    return master


def make_pyramid(master: Path, tile: int) -> Path:
    """``master`` as a tiled pyramidal TIFF beside it (JPEG Q90 in tiles of ``tile``)."""
    pyramid = master.with_name("bigtiff.tif")
    vips = need_tool("vips")
    args = [vips, "tiffsave", str(master), str(pyramid), "--tile", "--pyramid"]
    size = ["--tile-width", str(tile), "--tile-height", str(tile)]
    subprocess.run([*args, *size, "--compression", "jpeg", "--Q", "90"], check=True, timeout=600)
    return pyramid


def runs(config: Path, tile: int) -> list[Run]:
    """The runs of a round."""
    common = (
        "--to", "{out}", "--base-url", "http://127.0.0.1:8182", "--tile-size", str(tile),
    )  # fmt: skip
    export = (sys.executable, "-m", "iiif_shim", "export", "--config", str(config), *common)
    shim = (*export, "--identifier", "big")
    vips = need_tool("vips")

    def dzsave(name: str) -> tuple[str, ...]:
        return (
            vips, "dzsave", str(config.parent / "images" / name), "{out}/big",
            "--tile-size", str(tile), "--overlap", "0", "--suffix", f".jpg[Q={QUALITY}]",
            "--id", "http://127.0.0.1:8182/iiif/3",
        )  # fmt: skip

    jpeg, tiff = dzsave("big.jpg"), dzsave("bigtiff.tif")
    one = (("VIPS_CONCURRENCY", "1"),)
    return [
        Run("vips dzsave --layout iiif3", (*jpeg, "--layout", "iiif3")),
        Run("vips dzsave --layout iiif3, 1 thread", (*jpeg, "--layout", "iiif3"), one),
        Run("vips dzsave --layout iiif (2)", (*jpeg, "--layout", "iiif")),
        Run("export --api 3", (*shim, "--api", "3"), compare="vips dzsave --layout iiif3"),
        Run(
            "export --api 3 --jobs 1",
            (*shim, "--api", "3", "--jobs", "1"),
            compare="vips dzsave --layout iiif3, 1 thread",
        ),
        Run("export --api 2", (*shim, "--api", "2"), compare="vips dzsave --layout iiif (2)"),
        Run("export --api both", (*shim, "--api", "both")),
        Run("tiled TIFF: vips dzsave --layout iiif3", (*tiff, "--layout", "iiif3")),
        Run(
            "tiled TIFF: export --api 3",
            (*export, "--identifier", "bigtiff", "--api", "3"),
            compare="tiled TIFF: vips dzsave --layout iiif3",
        ),
    ]


def _time_field(text: str, name: str) -> str:
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key == name:
            return value
    raise AssertionError(f"no {name!r} in /usr/bin/time's output:\n{text}")


def counted(folder: Path) -> tuple[int, int, int]:
    """Files (every path), distinct JPEG images (inodes) and bytes (each inode once)."""
    files = 0
    images: set[int] = set()
    sizes: dict[int, int] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            files += 1
            sizes[st.st_ino] = st.st_size
            if path.suffix == ".jpg":
                images.add(st.st_ino)
    return files, len(images), sum(sizes.values())


def measure(run: Run, out: Path, log: Path) -> Measured:
    timing = out.parent / f"{out.name}.time"
    command = [part.replace("{out}", str(out)) for part in run.command]
    out.mkdir(parents=True)
    with log.open("wb") as sink:
        done = subprocess.run(
            [TIME, "-v", "-o", str(timing), *command],
            stdout=sink,
            stderr=sink,
            env={**os.environ, "IIIF_SHIM_CONFIG": "", **dict(run.env)},
            cwd=ROOT,
            timeout=3600,
            check=False,
        )
    if done.returncode != 0:
        said = [line for line in log.read_text().splitlines() if not line.startswith("export: ")]
        tail = "\n".join(said[-20:])
        raise SystemExit(f"{run.name} failed ({done.returncode}):\n{tail}")
    text = timing.read_text()
    wall = 0.0
    for part in _time_field(text, "Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    cpu = float(_time_field(text, "User time (seconds)"))
    cpu += float(_time_field(text, "System time (seconds)"))
    peak = int(_time_field(text, "Maximum resident set size (kbytes)")) / 1024
    files, images, size = counted(out)
    return Measured(wall, cpu, peak, files, images, size)


def median_of(rounds: Sequence[Measured]) -> Measured:
    return Measured(
        statistics.median(m.wall for m in rounds),
        statistics.median(m.cpu for m in rounds),
        statistics.median(m.peak_mb for m in rounds),
        rounds[0].files,
        rounds[0].images,
        rounds[0].bytes,
    )


def table(all_runs: list[Run], results: dict[str, list[Measured]]) -> list[str]:
    rows = [
        "| run | wall s | CPU s | peak MB | files | images | MB | images/s | wall / vips |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians = {name: median_of(found) for name, found in results.items()}
    for run in all_runs:
        m = medians[run.name]
        ratio = f"{m.wall / medians[run.compare].wall:.1f}" if run.compare else ""
        walls = "/".join(f"{r.wall:.1f}" for r in results[run.name])
        rows.append(
            f"| {run.name} | {m.wall:.1f} ({walls}) | {m.cpu:.1f} | {m.peak_mb:.0f} | {m.files} "
            f"| {m.images} | {m.bytes / 1e6:.1f} | {m.images / m.wall:.1f} | {ratio} |"
        )
    return rows


def section(rows: list[str], args: argparse.Namespace, load: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    vips = subprocess.run(["vips", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "iiif_shim"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if dirty:
        commit += " with uncommitted changes to iiif_shim"
    command = shlex.join([".venv/bin/python", "bench/export.py", *sys.argv[1:]])
    return "\n".join(
        [
            START,
            f"Written by `{command}` on {time.strftime('%Y-%m-%d')} (commit {commit};",
            f"{machine}, {vips}; load average {load} at the start). One image,",
            f"{args.width} x {args.height} JPEG (and that JPEG as a tiled pyramidal TIFF), tiles"
            f" of {args.tile_size}, JPEG quality {QUALITY}; every setting of the shim at its"
            f" default; medians of {args.rounds} rounds (each round's wall time in brackets).",
            "*images*: distinct JPEG files (the shim hard-links paths with the same pixels);",
            "*MB*: bytes on disk, each file once; *wall / vips*: against the vips run on the",
            "same layout (for `--jobs 1`, against vips with one thread).",
            "",
            *rows,
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=10000)
    parser.add_argument("--height", type=int, default=8000)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--write", type=Path, help="the Markdown file to put the section in")
    args = parser.parse_args()
    need_tool("time", TIME)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-export-") as name:
        tmp = Path(name)
        make_pyramid(make_master(tmp / "images", args.width, args.height), args.tile_size)
        backend = textwrap.dedent(
            f"""
            backends:
              local: {{type: files, root: "{tmp / "images"}"}}
            routes:
              - {{backend: local}}
            """
        )
        config = write_config(tmp / "shim.yaml", backend)
        all_runs = runs(config, args.tile_size)
        results: dict[str, list[Measured]] = {run.name: [] for run in all_runs}
        for r in range(args.rounds):
            for i, run in enumerate(all_runs):
                out = tmp / f"out-{r}-{i}"
                found = measure(run, out, tmp / f"out-{r}-{i}.log")
                results[run.name].append(found)
                print(f"round {r}: {run.name}: {found}", flush=True)
                shutil.rmtree(out)
        text = section(table(all_runs, results), args, load)
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else ""
        if START in old and END in old:
            new = old[: old.index(START)] + text + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n## Export\n\n" + text + "\n"
        args.write.write_text(new)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
