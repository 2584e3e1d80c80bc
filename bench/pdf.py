"""How fast PDFs are made, and whether PDFs and manifests leave room for images.

1. Pages per second of one PDF, for each kind of master (through a ``files`` backend, one shim
   process with its defaults, the rendered-image cache off): the sample book's pages (1200x1600
   JPEG, the embedded samples' kind), the 6000x4000 sample chart as JPEG, and the same chart as
   PNG and as uncompressed TIFF (masters that cannot be decoded at a reduced size); and an
   ordinary book as long as the defaults allow (``presentation.pdf_max_pages`` of the sample
   book's pages), timed whole. Each round makes the PDF of a fresh object (cold facts, nothing
   cached), alone, then while two clients ask for images without pause; medians of the rounds.
   From these: the seconds the largest PDF the defaults allow takes, and the most pages whose
   PDF, after a full ``pdf_wait`` in line, ends within two thirds of ``server.request_timeout``
   at the slowest rate seen beside images (what ``pdf_max_pages`` should stay under).
2. Admission: ten PDFs of 30 chart pages and ten cold manifests of 300 canvases asked at once,
   while three clients ask for images without pause: the answers of each kind by status, and
   the images' latency, against the same image clients alone.

    .venv/bin/python bench/pdf.py [--rounds 3] [--write docs/performance.md] [--before DIR]

``--before DIR`` measures the admission of the code in another checkout too (say, a worktree
of an earlier commit). Run from another checkout (``PYTHONPATH=that/checkout``) to measure only
that code. ``--write`` replaces the section between ``<!-- bench/pdf.py -->`` and
``<!-- /bench/pdf.py -->`` in the file (appending it when missing). Not a pass/fail test:
tests/http/test_pdf_bounds.py and tests/http/test_lanes.py check the behaviour; this reports
the numbers.
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
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from iiif_shim.config.settings import ServerSettings
from iiif_shim.presentation.settings import PresentationSettings
from tests.support import (
    BUNDLED,
    Process,
    free_port,
    request,
    start_shim,
    write_config,
)

START, END = "<!-- bench/pdf.py -->", "<!-- /bench/pdf.py -->"
MAX_PAGES = PresentationSettings().pdf_max_pages  # the defaults
WAIT = PresentationSettings().pdf_wait
DEADLINE = ServerSettings().request_timeout
KINDS = {  # name: (pages per PDF, what it is)
    "sample": (60, "the sample book's pages, 1200x1600 JPEG"),
    "book": (MAX_PAGES, f"an ordinary book: {MAX_PAGES} of those pages (`pdf_max_pages`)"),
    "jpeg-6000": (60, "the sample chart, 6000x4000 JPEG"),
    "png-6000": (20, "the chart as 6000x4000 PNG"),
    "tiff-6000": (20, "the chart as 6000x4000 uncompressed TIFF"),
}


def masters(folder: Path) -> dict[str, list[Path]]:
    """One master file (or three, cycled) per kind."""
    book = [folder / f"p{n}.jpg" for n in (1, 2, 3)]
    for page in book:  # copies on this file system, so objects can link them
        shutil.copy(BUNDLED / "book" / page.name, page)
    jpg, png, tif = folder / "chart.jpg", folder / "chart.png", folder / "chart.tif"
    shutil.copy(BUNDLED / "chart.jpg", jpg)
    chart = Image.open(jpg)
    chart.load()
    chart.save(png, compress_level=6)
    chart.save(tif)
    return {"book": book, "sample": book, "jpeg-6000": [jpg], "png-6000": [png], "tiff-6000": [tif]}


def make_object(root: Path, name: str, files: list[Path], pages: int) -> None:
    """A folder object of ``pages`` canvases, each its own identifier (hard links)."""
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(pages):
        source = files[i % len(files)]
        os.link(source, folder / f"c{i:03d}{source.suffix}")


def timed(shim: Process, path: str) -> tuple[int, float]:
    started = time.monotonic()
    resp = request(shim.port, path, timeout=900)
    return resp.status, time.monotonic() - started


class Images:
    """Clients asking for images without pause (each a new rendering), timing each answer."""

    def __init__(self, shim: Process, clients: int) -> None:
        self.shim, self.stop = shim, threading.Event()
        self.answers: list[tuple[int, float]] = []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, lane: int) -> None:
        n = 0
        while not self.stop.is_set():
            size = 200 + lane * 120 + n % 100
            self.answers.append(timed(self.shim, f"/iiif/3/noise.jpg/full/{size},/0/default.jpg"))
            n += 1

    def __enter__(self) -> Images:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def summary(self) -> str:
        times = sorted(s for _, s in self.answers)
        statuses = Counter(status for status, _ in self.answers)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return (
            f"{len(times)} images, {_statuses(statuses)}, p50 {statistics.median(times) * 1000:.0f}"
            f" ms, p99 {p99 * 1000:.0f} ms"
        )


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(f"{n} x {status}" for status, n in sorted(counts.items()))


def config(tmp: Path, root: Path) -> Path:
    return write_config(
        tmp / "shim.yaml",
        f"""
        server: {{request_timeout: 600, health_interval: 3600}}
        cache: {{image_bytes: 0}}
        backends:
          objects: {{type: files, root: "{root}"}}
        routes:
          - {{backend: objects}}
        presentation:
          pdf_max_pages: 1000
          sources:
            scans: {{type: folder, backend: objects}}
        """,
    )


def speeds(tmp: Path, rounds: int, kinds: list[str], log: Callable[[str], None]) -> list[str]:
    root = tmp / "speeds"
    files = masters(tmp)
    Image.effect_noise((2000, 1500), 40).convert("RGB").save(root.parent / "noise.jpg")
    root.mkdir()
    os.link(root.parent / "noise.jpg", root / "noise.jpg")
    for kind in kinds:
        pages = KINDS[kind][0]
        for r in range(rounds):
            for mode in ("alone", "load"):
                make_object(root, f"{kind}-{mode}-{r}", files[kind], pages)
    shim = start_shim(config(tmp, root), tmp)
    rows = []
    try:
        for kind in kinds:
            pages, what = KINDS[kind]
            rates: dict[str, list[float]] = {"alone": [], "load": []}
            for r in range(rounds):
                status, seconds = timed(shim, f"/iiif/presentation/{kind}-alone-{r}/pdf")
                assert status == 200, status
                rates["alone"].append(pages / seconds)
                with Images(shim, 2):
                    status, seconds = timed(shim, f"/iiif/presentation/{kind}-load-{r}/pdf")
                assert status == 200, status
                rates["load"].append(pages / seconds)
                log(f"{kind} round {r}: {rates['alone'][-1]:.1f} / {rates['load'][-1]:.1f} pages/s")
            alone, load = (statistics.median(rates[k]) for k in ("alone", "load"))
            rounds_text = "; ".join(
                f"{a:.1f}/{b:.1f}" for a, b in zip(*rates.values(), strict=True)
            )
            slowest = min(rates["load"])
            largest = (
                f"{MAX_PAGES / alone:.0f} / {MAX_PAGES / load:.0f} ({MAX_PAGES / slowest:.0f})"
            )
            fit = int((DEADLINE * 2 / 3 - WAIT) * slowest)
            rows.append(
                f"| {what} | {pages} | {alone:.1f} | {load:.1f} | {rounds_text} | {largest} "
                f"| {fit} |"
            )
    finally:
        shim.stop()
    return rows


def admission(tmp: Path, log: Callable[[str], None], tree: Path | None = None) -> list[str]:
    """The answers and image latencies; ``tree``: the shim of that checkout instead."""
    root = tmp / ("admission-before" if tree else "admission")
    root.mkdir()
    os.link(tmp / "noise.jpg", root / "noise.jpg")
    tiny = tmp / "tiny.jpg"
    if not tiny.exists():
        Image.new("RGB", (60, 40), (200, 200, 200)).save(tiny)
    for m in range(10):
        make_object(root, f"m{m}", [tiny], 300)
        make_object(root, f"p{m}", [tmp / "chart.jpg"], 30)
    shim = start_shim(config(tmp, root), tmp) if tree is None else shim_of(tree, tmp, root)
    lines = []
    try:
        with Images(shim, 3) as alone:
            time.sleep(10)  # a fixed span of load, for the figures only
        lines.append(f"- images alone, 10 s: {alone.summary()}")
        answers: dict[str, tuple[int, float]] = {}

        def ask(path: str) -> None:
            answers[path] = timed(shim, path)

        asked = [f"/iiif/presentation/3/m{m}/manifest" for m in range(10)]
        asked += [f"/iiif/presentation/p{m}/pdf" for m in range(10)]
        started = time.monotonic()
        with Images(shim, 3) as beside:
            threads = [threading.Thread(target=ask, args=(p,)) for p in asked]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        took = time.monotonic() - started
        for kind, suffix in (("manifests", "/manifest"), ("PDFs", "/pdf")):
            mine = {p: a for p, a in answers.items() if p.endswith(suffix)}
            statuses = Counter(status for status, _ in mine.values())
            slowest = max(s for _, s in mine.values())
            lines.append(
                f"- 10 {kind}: {_statuses(statuses)}, the last answered after {slowest:.1f} s"
            )
        lines.append(f"- images beside them, {took:.0f} s: {beside.summary()}")
        log("\n".join(lines))
    finally:
        shim.stop()
    return lines


def shim_of(tree: Path, tmp: Path, root: Path) -> Process:
    """A shim process running the code of checkout ``tree`` (run from there: ``-m`` puts the
    current folder first on the module path)."""
    port = free_port()
    args = [sys.executable, "-m", "iiif_shim", "serve", "--config", str(config(tmp, root))]
    args += ["--port", str(port), "--processes", "1"]
    env = {"PYTHONPATH": str(tree)}
    return Process(args, port, tmp / f"shim-before-{port}.log", env=env, cwd=tree)


def commit_of(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def section(rows: list[str], lines: list[str], before: list[str], rounds: int) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    here = Path(__file__).resolve().parent.parent
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain"], capture_output=True, text=True
    ).stdout.strip()
    command = shlex.join([".venv/bin/python", "bench/pdf.py", *sys.argv[1:]])
    return "\n".join(
        [
            START,
            "## PDFs",
            "",
            f"Written by `{command}`",
            f"on {time.strftime('%Y-%m-%d')} (commit {commit_of(here)}"
            + (" with uncommitted changes" if dirty else "")
            + f"; {machine}); see its docstring for the method. One shim process with its",
            "defaults (two image threads), a `files` backend, the rendered-image cache off;",
            "every PDF is of a fresh object (its facts cold). Pages per second, median of",
            f"{rounds} rounds; *beside images*: while two clients ask for images without pause.",
            f"Then the seconds the largest PDF the defaults allow ({MAX_PAGES} pages,",
            "`presentation.pdf_max_pages`) takes at those rates, against the "
            f"{DEADLINE:g} s of `server.request_timeout`;",
            f"and the most pages whose PDF, after a full `pdf_wait` ({WAIT:g} s) in line, ends",
            f"within two thirds of it ({DEADLINE * 2 / 3:g} s) at the slowest rate beside images:",
            "masters whose *fits* is below `pdf_max_pages` need a lower one.",
            "",
            "| masters | pages | pages/s alone | pages/s beside images | rounds (alone/beside) |"
            f" s for {MAX_PAGES} pages: alone / beside (slowest) | fits |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "### Admission by kind",
            "",
            "Ten PDFs of 30 pages of the 6000x4000 chart and ten cold manifests of 300 canvases,",
            "asked at once while three clients ask for images without pause (defaults: one PDF",
            "built at a time in a process of two image threads, "
            f"`pdf_wait` {WAIT:g} s). The machine",
            "is shared with other work: rates move between runs by a third or more, so compare",
            "the answers' statuses, and each image rate with the *alone* line of its own code:",
            "",
            *lines,
            *before,
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="the Markdown file to put the section in")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--no-admission", action="store_true", help="the pages per second only")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose admission is measured too (earlier)"
    )
    args = parser.parse_args()
    before: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-pdf-") as name:
        tmp = Path(name)
        rows = speeds(tmp, args.rounds, args.kinds, print)
        lines = [] if args.no_admission else admission(tmp, print)
        if args.before and not args.no_admission:
            before = [
                "",
                f"The same with the code of commit {commit_of(args.before)}, before the lanes:",
                "",
                *admission(tmp, print, args.before.resolve()),
            ]
    text = section(rows, lines, before, args.rounds)
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else ""
        if START in old and END in old:
            new = old[: old.index(START)] + text + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + text + "\n"
        args.write.write_text(new)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
