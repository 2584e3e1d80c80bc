"""What a read from the disk tier costs, with every check it makes.

    python bench/cache_reads.py [--entries N] [--rounds R]

Writes N rendered images of 50 KB and N source facts into a fresh disk folder (in a temporary
folder of the machine), then reads each back R times through ``DiskCache.get`` (a hit: the
source folder opened as no link, the entry checked to be a regular file, its header read, then
exactly the lengths it states, the CRC and the slot digest checked, the facts' every field
type-checked) and through ``entry.examine`` alone (the same bytes already in memory); then
one image of 5 MB and one of 20 MB, each read back L times per round (the cost of copying
large bodies). Prints the median microseconds per call of each, and per write. Only
``DiskCache.get``/``put`` and ``entry.encode``/``examine`` (``decode`` before it) are used,
so the same script times an older checkout too (``PYTHONPATH=<checkout> python
bench/cache_reads.py``). One process, one thread: the figures are the CPU and system-call
cost of a hit, not a load test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from iiif_shim.cache.disk import DiskCache
from iiif_shim.cache.entry import FACTS, Slot, encode, source_key
from iiif_shim.iiif.info import TileGrid
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Rendered

try:
    from iiif_shim.cache.entry import examine as read_entry
except ImportError:  # a checkout from before entries said why they were rejected
    from iiif_shim.cache.entry import decode as read_entry  # type: ignore[attr-defined,no-redef]


def _median_us(calls: list[Callable[[], object]], rounds: int) -> float:
    """The median over ``rounds`` of the mean microseconds per call of ``calls``."""
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for call in calls:
            call()
        means.append((time.perf_counter() - started) / len(calls) * 1e6)
    return statistics.median(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--large-reads", type=int, default=10)
    args = parser.parse_args()
    body = os.urandom(50 * 1024)
    facts = SourceInfo(6000, 4000, format="JPEG", mode="RGB", version="1700000000.0-2200000",
                       last_modified=1.7e9, tiles=TileGrid(512, 512, (1, 2, 4, 8, 16)))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="iiif-shim-bench-") as tmp:
        disk = DiskCache(Path(tmp) / "cache", 1 << 30)
        disk.open()
        images, infos = [], []
        for n in range(args.entries):
            source = source_key("bench", f"image-{n}.jpg")
            images.append(Slot(source, hashlib.sha256(str(n).encode()).hexdigest()))
            infos.append(Slot(source, FACTS))
        image = Rendered(body, "image/jpeg")
        put_us = _median_us([partial(disk.put, slot, image) for slot in images], 1)
        for slot in infos:
            disk.put(slot, facts)
        stored_image, stored_facts = encode(images[0], image), encode(infos[0], facts)
        now, n, rounds = time.time(), args.entries, args.rounds
        rows = [
            ("disk hit, 50 KB image", _median_us([partial(disk.get, s) for s in images], rounds)),
            ("disk hit, facts", _median_us([partial(disk.get, s) for s in infos], rounds)),
            ("disk write, 50 KB image", put_us),
            (
                "examine, 50 KB image in memory",
                _median_us([partial(read_entry, images[0], stored_image, now)] * n, rounds),
            ),
            (
                "examine, facts in memory",
                _median_us([partial(read_entry, infos[0], stored_facts, now)] * n, rounds),
            ),
        ]
        assert disk.get(images[0]) == Rendered(body, "image/jpeg")
        assert disk.get(infos[0]) == facts
        for megabytes in (5, 20):
            large = Rendered(os.urandom(megabytes * 1_000_000), "image/jpeg")
            slot = Slot(source_key("bench", f"large-{megabytes}.jpg"), "f" * 64)
            disk.put(slot, large)
            assert disk.get(slot) == large
            reads = [partial(disk.get, slot)] * args.large_reads
            rows.append((f"disk hit, {megabytes} MB image", _median_us(reads, rounds)))
    print(f"{args.entries} entries, {args.rounds} rounds; median microseconds per call")
    print("| operation | us |\n|---|---|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")


if __name__ == "__main__":
    main()
