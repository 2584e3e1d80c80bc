"""Content search at scale: how fast ``iiif-shim index`` builds an index, how large it is, how
much memory indexing takes, and how fast search and autocomplete answer under load, on SQLite
and on PostgreSQL in the same run.

    .venv/bin/python bench/search.py [--objects 20] [--pages 500] [--words 300]
        [--seconds 10] [--engines sqlite,postgres] [--write docs/performance.md]

1. A corpus (deterministic): ``--objects`` folder objects of ``--pages`` pages each (20 x 500
   = 10,000 pages), every page an ALTO v4 file of about ``--words`` words (lines of ten, boxes
   in the pixels of a 2400x3200 master) beside its image (one 1200x1600 JPEG, hard-linked:
   the canvases' sizes are read as usual, the boxes scale by 1/2). Words are drawn from a
   Zipf-like vocabulary of 20,000 (the n-th most common word about 1/n as often as the
   first); ``zürich`` is put on three pages of each object (the rare word, with a diacritic,
   searched as ``zurich``), ``harbour`` is the 10th most common (about 3 a page).
2. Per engine, ``iiif-shim index --config F`` on an empty index, timed, with the peak resident
   memory of its process (``wait4``); then once more with nothing changed; and the index's
   size (``Index.size()``). Memory is also taken indexing a fifth of the corpus: indexing
   streams page by page, so it should not grow with the corpus.
3. Per engine, a shim (``serve`` with its default processes: one per CPU) over that index,
   and wrk with 16 connections for ``--seconds`` per figure, each figure started once the
   shim is idle again (a saturating load leaves answers being made after wrk stops), with the
   shim's CPU time per answer: Search 1.0 (what Mirador and UV ask) and 2.0 for the common
   and the rare word, each word asked again and again (the service's small cache of hits
   answers after the first) and each request a different word of the same kind (common: the
   5th to 100th most common words; rare: words from the vocabulary's tail, on a page or two
   of the object, or none), autocomplete for a short and a longer prefix, and the object's
   manifest as the peer (a document the shim keeps in memory). All on one object of
   ``--pages`` pages: search is per object (no collection-wide search is offered).
4. The first search of an object never indexed: a shim over an empty index, one request;
   the object is indexed on demand within ``search.build_wait`` or answered 503.

Every server and the client share the machine's CPUs: compare ratios, not absolutes. Not a
test: it asserts only that the answers were 200. ``--write`` replaces the section between
``<!-- bench/search.py -->`` and ``<!-- /bench/search.py -->`` of the file (appending it when
missing). Needs wrk and PostgreSQL (``bash bench/perf.sh``, ``bash deploy/setup.sh test``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from bench.load import Run, cpu_seconds, wrk
from iiif_shim.search.index import open_index
from iiif_shim.search.settings import SearchSettings
from tests.support import ROOT, Process, request, start_shim, write_config

START, END = "<!-- bench/search.py -->", "<!-- /bench/search.py -->"
VOCABULARY = 20_000
COMMON = "harbour"  # the 10th most common word
RARE = "Zürich"  # on three pages of each object
RARE_PAGES = 3
CONNECTIONS = 16
PROCESSES = 0  # serve's default: one process per CPU
MASTER = (2400, 3200)  # the OCR's page; the images are half that
_REAL = (  # the most common words, in order (the rest are made up)
    "the of and to in a was that he harbour it his with for as had on by at which from her be "
    "this not is but all they were have one their an or said so when we there been would "
    "she my no what who them will into if more up out about then any could some only other "
    "than these time its our can may very two over little see upon great before made after "
    "men must now such well down did him should through day way where old how much good "
    "own man even long like know most just first came still many house ship water town boat "
    "street church mill river bridge market lake shore winter summer morning evening letter"
)
REAL = _REAL.split()


def vocabulary(rng: random.Random) -> list[str]:
    """VOCABULARY distinct words, the most common first: REAL, then made-up words."""
    words = list(dict.fromkeys(REAL))
    seen = set(words)
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"] + ["ch", "st", "er", "an"]
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def alto_page(words: list[str]) -> str:
    """An ALTO v4 page of ``words``, ten a line, in the pixels of a MASTER-sized page."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description>'
        "<MeasurementUnit>pixel</MeasurementUnit></Description><Layout>"
        f'<Page ID="p" WIDTH="{MASTER[0]}" HEIGHT="{MASTER[1]}"><PrintSpace>',
        '<TextBlock ID="b">',
    ]
    for n in range(0, len(words), 10):
        y = 200 + (n // 10) * 90
        out.append(f'<TextLine HPOS="200" VPOS="{y}" WIDTH="2000" HEIGHT="60">')
        x = 200
        for word in words[n : n + 10]:
            width = 24 * len(word)
            out.append(
                f'<String CONTENT="{word}" HPOS="{x}" VPOS="{y}" WIDTH="{width}" HEIGHT="60"/>'
            )
            x += width + 24
        out.append("</TextLine>")
    out.append("</TextBlock></PrintSpace></Page></Layout></alto>")
    return "\n".join(out)


def corpus(root: Path, objects: int, pages: int, words: int) -> list[str]:
    """The objects' folders under ``root`` (pages p0001.jpg + p0001.xml ...); their names."""
    rng = random.Random(18)
    vocab = vocabulary(rng)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))
    image = root.parent / "page.jpg"
    Image.new("RGB", (MASTER[0] // 2, MASTER[1] // 2), (236, 230, 214)).save(image, quality=80)
    names = []
    for o in range(objects):
        name = f"vol-{o:02d}"
        folder = root / name
        folder.mkdir(parents=True)
        rare_on = set(rng.sample(range(pages), RARE_PAGES))
        for p in range(pages):
            page = rng.choices(vocab, cum_weights=weights, k=words)
            if p in rare_on:
                page[rng.randrange(words)] = RARE
            os.link(image, folder / f"p{p + 1:04d}.jpg")
            (folder / f"p{p + 1:04d}.xml").write_text(alto_page(page), encoding="utf-8")
        names.append(name)
    return names


def config(tmp: Path, root: Path, engine: str, dsn: str | None) -> Path:
    search = f"{{postgres: '{dsn}'}}" if engine == "postgres" else f"{{folder: '{tmp / 'index'}'}}"
    return write_config(
        tmp / f"{engine}.yaml",
        f"""
        server: {{health_interval: 3600}}
        backends:
          corpus: {{type: files, root: "{root}"}}
        routes:
          - {{backend: corpus}}
        presentation:
          sources:
            volumes: {{type: folder, backend: corpus}}
        search: {search}
        """,
    )


@dataclass
class Build:
    seconds: float
    pages: int
    peak_mb: float
    summary: str


@dataclass
class Figure:
    alone: float  # ms: the first answer (one path), or the median first answer of five
    hits: int  # of the first path, as its answer says (within.total), or -1
    run: Run
    cpu_ms: float  # the shim's CPU time per answer under load


def settle(shim: Process, limit: float = 300) -> None:
    """Until the shim's processes use less than a tenth of a CPU (the answers a load left
    behind, still being worked on after the client stopped, would time the next figure)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds([shim.proc.pid])
        time.sleep(0.5)
        if cpu_seconds([shim.proc.pid]) - before < 0.05:
            return
    raise SystemExit(f"the shim was still busy after {limit:g} s")


@dataclass
class Result:
    """One engine's figures."""

    small: Build  # indexing a fifth of the corpus
    built: Build  # indexing all of it
    again: Build  # all of it again, nothing changed
    size: int  # bytes
    figures: dict[str, Figure]
    first: tuple[int, float]  # status and seconds of the first search of an unindexed object


def index(cfg: Path, *extra: str) -> Build:
    """``iiif-shim index --config cfg``: wall time, peak RSS of its process, its summary."""
    args = [sys.executable, "-m", "iiif_shim", "index", "--config", str(cfg), *extra]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        summary, errors = out.read().strip(), err.read().strip()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(args)}: exit {proc.returncode}\n{summary}\n{errors}")
    found = re.search(r"(\d+) pages? indexed", summary)
    return Build(seconds, int(found.group(1)) if found else -1, usage.ru_maxrss / 1024, summary)


def index_size(engine: str, tmp: Path, dsn: str | None) -> int:
    settings = (
        SearchSettings(folder=tmp / "index") if engine == "sqlite" else SearchSettings(postgres=dsn)
    )
    opened = open_index(settings, str(tmp / f"{engine}.yaml"))
    try:
        return opened.size()
    finally:
        opened.close()


def rare_words(root: Path, name: str, vocab_tail: list[str]) -> list[str]:
    """Tail words that occur in object ``name`` (those a user would look for), at most 200."""
    text = "\n".join(p.read_text() for p in sorted((root / name).glob("*.xml")))
    present = set(re.findall(r'CONTENT="([^"]+)"', text))
    return [w for w in vocab_tail if w in present][:200]


def search_paths(name: str, rare: list[str], vocab: list[str]) -> dict[str, list[str]]:
    s1, s2 = f"/iiif/search/1/{name}", f"/iiif/search/2/{name}"
    common_many = vocab[9:100]
    return {
        "manifest (peer)": [f"/iiif/presentation/3/{name}/manifest"],
        "1.0 `the` (the most common word), again and again": [f"{s1}?q=the"],
        f"1.0 `{COMMON}` (common), again and again": [f"{s1}?q={COMMON}"],
        "1.0 common words, each request another": [f"{s1}?q={w}" for w in common_many],
        "1.0 `zurich` (rare), again and again": [f"{s1}?q=zurich"],
        "1.0 rare words, each request another": [f"{s1}?q={quote(w)}" for w in rare],
        f"2.0 `{COMMON}` (common), again and again": [f"{s2}?q={COMMON}"],
        "2.0 rare words, each request another": [f"{s2}?q={quote(w)}" for w in rare],
        "1.0 autocomplete `h`": [f"{s1}/autocomplete?q=h"],
        "1.0 autocomplete, 3-letter prefixes of rare words": [
            f"{s1}/autocomplete?q={quote(w[:3])}" for w in rare
        ],
        "2.0 autocomplete `har`": [f"{s2}/autocomplete?q=har"],
    }


def load(shim: Process, paths: dict[str, list[str]], seconds: float) -> dict[str, Figure]:
    """Each kind of request alone first (cold: never asked), then under wrk."""
    base = f"http://127.0.0.1:{shim.port}"
    runs = {}
    for what, listed in paths.items():
        settle(shim)
        alone, hits = [], -1
        for path in listed[:5]:
            started = time.monotonic()
            response = request(shim.port, path, timeout=120)
            alone.append((time.monotonic() - started) * 1000)
            if response.status != 200:
                raise SystemExit(f"{path}: {response.status} {response.text[:300]}")
            searched = "/search/" in path and "/autocomplete" not in path
            if hits < 0 and searched and (found := re.search(r'"total":\s*(\d+)', response.text)):
                hits = int(found.group(1))
        settle(shim)
        cpu = cpu_seconds([shim.proc.pid])
        run = wrk(base, listed, seconds, CONNECTIONS)
        if run.errors:
            raise SystemExit(f"{what}: {run.errors} failed requests")
        settle(shim)  # the answers still being made count too
        cpu_ms = (cpu_seconds([shim.proc.pid]) - cpu) * 1000 / max(run.requests, 1)
        runs[what] = Figure(statistics.median(alone), hits, run, cpu_ms)
        print(
            f"  {what}: alone {runs[what].alone:.1f} ms ({hits} hits); under load p50 "
            f"{run.latency_ms['50']:.1f} ms, p99 {run.latency_ms['99']:.1f} ms, {run.rps:.0f}/s, "
            f"{cpu_ms:.1f} ms CPU each",
            flush=True,
        )
    return runs


def first_search(tmp: Path, cfg_body: Path, name: str) -> tuple[int, float]:
    """A shim over an empty index: the first search of object ``name`` (status, seconds)."""
    shim = start_shim(cfg_body, tmp, "--processes", str(PROCESSES))
    try:
        started = time.monotonic()
        response = request(shim.port, f"/iiif/search/1/{name}?q={COMMON}", timeout=300)
        return response.status, time.monotonic() - started
    finally:
        shim.stop()


def machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {cpus} CPUs, {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def postgres_version(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return head + (" with uncommitted changes" if dirty else "")


def mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--write", type=Path, help="the Markdown file to put the section in")
    args = parser.parse_args()
    engines = args.engines.split(",")
    command = " ".join(["bench/search.py", *map(shlex.quote, sys.argv[1:])])
    with tempfile.TemporaryDirectory(prefix="iiif-shim-search-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "corpus"
        started = time.monotonic()
        names = corpus(root, args.objects, args.pages, args.words)
        total = args.objects * args.pages
        ocr_bytes = sum(p.stat().st_size for p in root.glob("*/*.xml"))
        print(
            f"corpus: {total} pages, {mb(ocr_bytes)} of ALTO, {time.monotonic() - started:.0f} s",
            flush=True,
        )
        vocab = vocabulary(random.Random(18))
        rare = rare_words(root, names[0], vocab[15_000:])
        paths = search_paths(names[0], rare, vocab)
        results: dict[str, Result] = {}
        server = None
        versions = []
        try:
            for engine in engines:
                dsn = None
                if engine == "postgres":
                    from tests.postgres import Postgres, new_database

                    server = Postgres()
                    dsn = new_database(server.dsn())
                    versions.append(postgres_version(dsn))
                work = tmp / engine
                work.mkdir()
                # memory at a fifth of the corpus, in an index of its own
                part = tmp / f"{engine}-part"
                part.mkdir()
                part_dsn = new_database(server.dsn()) if engine == "postgres" and server else None
                fifth = [a for n in names[: max(1, args.objects // 5)] for a in ("--object", n)]
                small = index(config(part, root, engine, part_dsn), *fifth)
                print(
                    f"{engine}: a fifth: {small.summary}; peak {small.peak_mb:.0f} MB", flush=True
                )
                cfg = config(work, root, engine, dsn)
                built = index(cfg)
                print(
                    f"{engine}: {built.summary}; {built.seconds:.0f} s, peak "
                    f"{built.peak_mb:.0f} MB",
                    flush=True,
                )
                again = index(cfg)
                size = index_size(engine, work, dsn)
                print(f"{engine}: again {again.seconds:.1f} s; size {mb(size)}", flush=True)
                shim = start_shim(cfg, work, "--processes", str(PROCESSES))
                try:
                    runs = load(shim, paths, args.seconds)
                finally:
                    shim.stop()
                empty = tmp / f"{engine}-empty"
                empty.mkdir()
                empty_dsn = new_database(server.dsn()) if engine == "postgres" and server else None
                first = first_search(empty, config(empty, root, engine, empty_dsn), names[1])
                print(f"{engine}: first search of an object never indexed: {first}", flush=True)
                results[engine] = Result(small, built, again, size, runs, first)
        finally:
            if server is not None:
                server.remove()
    text = report(args, command, total, ocr_bytes, len(rare), versions, results)
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else ""
        if START in old and END in old:
            new = old[: old.index(START)] + text + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + text + "\n"
        args.write.write_text(new)
        print(f"wrote {args.write}")


def report(
    args: argparse.Namespace,
    command: str,
    total: int,
    ocr_bytes: int,
    rare: int,
    versions: list[str],
    results: dict[str, Result],
) -> str:
    engines = list(results)
    lines = [
        START,
        "## Content search",
        "",
        f"Written by `.venv/bin/python {command}` on {time.strftime('%Y-%m-%d')} (commit "
        f"{commit()}; {machine()}{', ' + ', '.join(versions) if versions else ''}); see its "
        "docstring for the method. The corpus: "
        f"{args.objects} objects of {args.pages} pages, {total} ALTO pages of {args.words} words "
        f"({mb(ocr_bytes)} of ALTO), a Zipf-like vocabulary of {VOCABULARY} words.",
        "",
        "### Building the index (`iiif-shim index`, default `--jobs`)",
        "",
        "| engine | pages/s | seconds | again, nothing changed | index size | peak memory: "
        "a fifth / all |",
        "|---|---|---|---|---|---|",
    ]
    for engine in engines:
        r = results[engine]
        built, again, small, size = r.built, r.again, r.small, r.size
        lines.append(
            f"| {engine} | {total / built.seconds:.0f} | {built.seconds:.0f} | "
            f"{again.seconds:.1f} s | {mb(size)} | {small.peak_mb:.0f} MB / "
            f"{built.peak_mb:.0f} MB |"
        )
    lines += [
        "",
        f"### Answers under load: one object of {args.pages} pages, {CONNECTIONS} connections",
        "",
        f"Each kind of request first alone on an idle server, never asked before (its first "
        "answer; the median of the first five for a list of words), then under wrk, "
        f"{args.seconds:g} s a figure, against `serve` with its default processes (one per "
        f"CPU): latency in ms, p50 / p99, answers a second, and the shim's CPU time per answer "
        "(ms). Hits: in the first answer (1.0: hits; 2.0: annotations, one a line of a hit). "
        f"Rare words: {rare} words of the vocabulary's tail that the object holds.",
        "",
        "| request | hits | "
        + " | ".join(f"{e}: alone | {e}: p50 / p99 (answers/s) | {e}: CPU" for e in engines)
        + " |",
        "|---|---|" + "---|---|---|" * len(engines),
    ]
    for what in results[engines[0]].figures:
        cells = []
        hits = -1
        for engine in engines:
            figure = results[engine].figures[what]
            hits = max(hits, figure.hits)
            run = figure.run
            cells.append(f"{figure.alone:.1f}")
            cells.append(
                f"{run.latency_ms['50']:.1f} / {run.latency_ms['99']:.1f} ({run.rps:.0f}/s)"
            )
            cells.append(f"{figure.cpu_ms:.1f}")
        lines.append(f"| {what} | {hits if hits >= 0 else ''} | " + " | ".join(cells) + " |")
    lines += ["", "The first search of an object never indexed (indexed on demand):", ""]
    for engine in engines:
        status, seconds = results[engine].first
        lines.append(f"- {engine}: {status} after {seconds:.1f} s")
    lines += ["", END]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
