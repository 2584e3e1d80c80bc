"""Search latency of one object: how fast the shim answers searches that its small cache of
answers cannot answer (each request another query), for common words, rare words, prefixes
and the empty ``q``, with 1 client and with 16, on an object of 500 pages and one of 2,000.

    .venv/bin/python bench/search_hits.py [--pages 500,2000] [--words 300] [--seconds 8]
        [--clients 1,16] [--kinds common,rare,prefix3,prefix2,the,empty] [--folder DIR]

1. A corpus (deterministic): one folder object per ``--pages`` figure (``p500``, ``p2000``),
   each page an ALTO v4 file of ``--words`` words (lines of ten, boxes in the pixels of a
   2400x3200 master) beside its image (one 1200x1600 JPEG, hard-linked). Words are drawn from
   a Zipf-like vocabulary of 20,000 (the n-th most common word about 1/n as often as the
   first: the 10th about three times a page, the 100th on about one page in four).
   ``--ocr``: words as OCR gives them (punctuation, words of two terms, dashes, words
   hyphenated over a line break: what the hit finder has to look at word by word).
   ``--folder`` keeps the corpus and its index there for the next run (made when missing).
2. ``iiif-shim index --config F`` (SQLite; nothing read again when the corpus is kept and the
   index's schema is the same), then one shim (``serve --processes 1``, or ``--processes``)
   over it.
3. Per object and kind, the first request of five queries alone (the first of all, then the
   median of the five: answers never asked before, the object's index already built; the
   first search of an object also reads what it keeps of it), then wrk for ``--seconds`` with each
   connection count of ``--clients``, cycling through the kind's list of queries (more
   queries than the service keeps answers for, so none is answered from that cache):

   - ``manifest``: the object's 3.0 manifest, for comparison;
   - ``common``: the 10th to the 100th most common words (91), one word each;
   - ``rare``: words of the vocabulary's tail that the object holds (on a page or two), 200;
   - ``prefix3``: 100 three-letter prefixes (``bar*``) of words ranked 100 to 3,000;
   - ``prefix2``: every two-letter prefix of the vocabulary's made-up words (``ba*``: each
     some 230 terms, on most pages);
   - ``the``: the most common word, about 28 a page, pages 1 to 40 of its results (one
     query: after the first answer, its pages come from the answers' cache);
   - ``empty``: no ``q`` (every line is a hit), pages 1 to 40 (likewise).

Search 1.0 (what Mirador and UV ask), 50 hits a page. Hits: ``within.total`` of the first
answer. The server and the client share the machine's CPUs: compare runs of the same
machine, not absolutes. Not a test: it checks only that the answers were 200.
"""

from __future__ import annotations

import argparse
import itertools
import json
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

from bench.load import Run, wrk
from tests.support import ROOT, request, start_shim, write_config

VOCABULARY = 20_000
MASTER = (2400, 3200)  # the OCR's page; the images are half that
SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"]
_REAL = (  # the most common words, in order (the rest are made up)
    "the of and to in a was that he harbour it his with for as had on by at which from her be "
    "this not is but all they were have one their an or said so when we there been would "
    "she my no what who them will into if more up out about then any could some only other "
    "than these time its our can may very two over little see upon great before made after "
    "men must now such well down did him should through day way where old how much good "
    "own man even long like know most just first came still many house ship water town boat "
    "street church mill river bridge market lake shore winter summer morning evening letter"
)
KINDS = ("manifest", "common", "rare", "prefix3", "prefix2", "the", "empty")


def vocabulary() -> list[str]:
    """VOCABULARY distinct words, the most common first: real ones, then made-up ones."""
    rng = random.Random(18)
    words = list(dict.fromkeys(_REAL.split()))
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def ocr_like(words: list[str], rng: random.Random) -> list[str | tuple[str, str]]:
    """``words`` as OCR gives them: about one in eight with punctuation (``word,``), one in
    forty of two terms (``l'word``, ``word-word``), one in sixty a dash alone, and the last
    word of about one line in five hyphenated over the line break (a pair of parts)."""
    out: list[str | tuple[str, str]] = []
    for n, word in enumerate(words):
        roll = rng.random()
        if n % 10 == 9 and roll < 0.2:
            out.append((word[: len(word) // 2 + 1], word))  # (first part, whole word)
        elif roll < 0.125:
            out.append(word + rng.choice(",.;:"))
        elif roll < 0.15:
            out.append(rng.choice(["l'", "d'"]) + word if roll < 0.1375 else f"{word}-{word}")
        elif roll < 0.1667:
            out.append("\u2014")
        else:
            out.append(word)
    return out


def alto_page(words: list[str | tuple[str, str]]) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description>'
        "<MeasurementUnit>pixel</MeasurementUnit></Description><Layout>"
        f'<Page ID="p" WIDTH="{MASTER[0]}" HEIGHT="{MASTER[1]}"><PrintSpace><TextBlock ID="b">',
    ]
    rest = ""  # the second part of a word hyphenated at the end of the line before
    for n in range(0, len(words), 10):
        y = 200 + (n // 10) * 90
        out.append(f'<TextLine HPOS="200" VPOS="{y}" WIDTH="2000" HEIGHT="60">')
        x = 200
        if rest:
            out.append(
                f'<String CONTENT="{rest}" SUBS_TYPE="HypPart2" HPOS="{x}" VPOS="{y}" '
                f'WIDTH="{24 * len(rest)}" HEIGHT="60"/>'
            )
            x += 24 * len(rest) + 24
            rest = ""
        for word in words[n : n + 10]:
            extra = ""
            if isinstance(word, tuple):
                (word, whole), rest = word, word[1][len(word[0]) :]
                extra = f' SUBS_TYPE="HypPart1" SUBS_CONTENT="{whole}"'
            width = 24 * len(word)
            out.append(
                f'<String CONTENT="{word}"{extra} HPOS="{x}" VPOS="{y}" WIDTH="{width}" '
                'HEIGHT="60"/>'
            )
            x += width + 24
        out.append("</TextLine>")
    out.append("</TextBlock></PrintSpace></Page></Layout></alto>")
    return "\n".join(out)


def corpus(root: Path, sizes: list[int], words: int, vocab: list[str], ocr: bool) -> None:
    """Object ``p{n}`` of ``n`` pages for each of ``sizes`` under ``root`` (kept if there);
    ``ocr``: its words as OCR gives them (:func:`ocr_like`)."""
    weights = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))
    image = root / "page.jpg"
    if not image.exists():
        root.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (MASTER[0] // 2, MASTER[1] // 2), (236, 230, 214)).save(image)
    for size in sizes:
        folder = root / "objects" / f"p{size}"
        if (folder / "done").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(size)
        for p in range(size):
            page = rng.choices(vocab, cum_weights=weights, k=words)
            if not (folder / f"p{p + 1:04d}.jpg").exists():
                os.link(image, folder / f"p{p + 1:04d}.jpg")
            written: list[str | tuple[str, str]] = ocr_like(page, rng) if ocr else list(page)
            (folder / f"p{p + 1:04d}.xml").write_text(alto_page(written), encoding="utf-8")
        (folder / "done").write_text("")


def config(root: Path) -> Path:
    return write_config(
        root / "bench.yaml",
        f"""
        server: {{health_interval: 3600}}
        backends:
          corpus: {{type: files, root: "{root / "objects"}"}}
        routes:
          - {{backend: corpus}}
        presentation:
          sources:
            volumes: {{type: folder, backend: corpus}}
        search: {{folder: "{root / "index"}"}}
        """,
    )


def index(cfg: Path) -> str:
    args = [sys.executable, "-m", "iiif_shim", "index", "--config", str(cfg)]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return done.stdout.strip()


def queries(root: Path, name: str, vocab: list[str]) -> dict[str, list[str]]:
    """Each kind's list of query strings (``q=...&page=...``) for object ``name``."""
    text = "\n".join(p.read_text() for p in sorted((root / "objects" / name).glob("*.xml")))
    present = set(re.findall(r'\bCONTENT="([^"]+)"', text))
    rare = [w for w in vocab[15_000:] if w in present][:200]
    prefix3 = list(dict.fromkeys(w[:3] for w in vocab[100:3000] if len(w) >= 4))[:100]
    prefix2 = sorted({w[:2] for w in vocab[len(_REAL.split()) :]})
    return {
        "manifest": [f"/iiif/presentation/3/{name}/manifest"],
        "common": [f"q={w}" for w in vocab[9:100]],
        "rare": [f"q={quote(w)}" for w in rare],
        "prefix3": [f"q={quote(p)}*" for p in prefix3],
        "prefix2": [f"q={quote(p)}*" for p in prefix2],
        "the": ["q=the"] + [f"q=the&page={n}" for n in range(2, 41)],
        "empty": [""] + [f"page={n}" for n in range(2, 41)],
    }


@dataclass
class Figure:
    first: float  # ms: the first answer of the kind (its first query, never asked)
    alone: float  # ms: the median first answer of five queries of the kind
    hits: int  # within.total of the first answer
    runs: dict[int, Run]  # by connections


def measure(port: int, name: str, listed: list[str], clients: list[int], seconds: float) -> Figure:
    base = f"/iiif/search/1/{name}"
    paths = [q if q.startswith("/") else f"{base}?{q}" if q else base for q in listed]
    alone, hits = [], -1
    for path in paths[:5]:
        started = time.monotonic()
        response = request(port, path, timeout=300)
        alone.append((time.monotonic() - started) * 1000)
        if response.status != 200:
            raise SystemExit(f"{path}: {response.status} {response.text[:300]}")
        if hits < 0 and "/search/" in path:
            hits = json.loads(response.text)["within"]["total"]
    runs = {}
    for connections in clients:
        run = wrk(f"http://127.0.0.1:{port}", paths, seconds, connections)
        if run.errors:
            raise SystemExit(f"{name} {listed[0]}: {run.errors} failed requests")
        runs[connections] = run
    return Figure(alone[0], statistics.median(alone), hits, runs)


def machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {cpus} CPUs, Python {platform.python_version()}, "
        f"load {load:.1f} at the start"
    )


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "iiif_shim").strip()
    return git("rev-parse", "--short", "HEAD").strip() + (" with changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", default="500,2000")
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--folder", type=Path, help="keep the corpus and index here")
    parser.add_argument("--ocr", action="store_true", help="words as OCR gives them")
    parser.add_argument("--processes", type=int, default=1, help="of the shim (serve)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.pages.split(",")]
    clients = [int(n) for n in args.clients.split(",")]
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="iiif-shim-hits-") as tmp_name:
        root = (args.folder or Path(tmp_name)).resolve()
        vocab = vocabulary()
        started = time.monotonic()
        corpus(root, sizes, args.words, vocab, args.ocr)
        cfg = config(root)
        print(f"corpus: {time.monotonic() - started:.0f} s", flush=True)
        started = time.monotonic()
        summary = index(cfg)
        print(f"index: {summary} ({time.monotonic() - started:.0f} s)", flush=True)
        print(f"# bench/search_hits.py {shlex.join(sys.argv[1:])}: commit {commit()}, {machine()}")
        print("| object | kind | hits | first ms | alone ms | " + " | ".join(
            f"{c} client{'s' if c > 1 else ''}: p50 / p99 ms (answers/s)" for c in clients
        ) + " |")  # fmt: skip
        print("|---|---|---|---|---|" + "---|" * len(clients), flush=True)
        shim = start_shim(cfg, root, "--processes", str(args.processes))
        try:
            for size in sizes:
                name = f"p{size}"
                lists = queries(root, name, vocab)
                for kind in kinds:
                    figure = measure(shim.port, name, lists[kind], clients, args.seconds)
                    cells = [
                        f"{r.latency_ms['50']:.1f} / {r.latency_ms['99']:.1f} ({r.rps:.1f})"
                        for r in figure.runs.values()
                    ]
                    print(
                        f"| {size} pages | {kind} | {figure.hits} | {figure.first:.1f} | "
                        f"{figure.alone:.1f} | " + " | ".join(cells) + " |",
                        flush=True,
                    )
        finally:
            shim.stop()


if __name__ == "__main__":
    main()
