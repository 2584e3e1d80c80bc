"""Admission by kind and the PDF cache, below HTTP: the pool's lanes (a full lane refuses only
its own kind), the gate (slots, a line first come first served, its bounds, a waiter that gives
up), builds shared while anyone waits for them (``Flights``), and the folder of kept documents
(valid only while every marker holds its token: a purge of one source, a later build, other
pages, eviction, a purge of everything)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from iiif_shim.base.errors import QueueFull
from iiif_shim.base.lanes import Lane, in_lane
from iiif_shim.cache.documents import DocumentFolder, owned
from iiif_shim.cache.entry import source_key
from iiif_shim.imaging.pool import Gate, Workers
from iiif_shim.presentation.pdfs import Flights

KEY = "a" * 32
SOURCES = [source_key("b", f"p{i}") for i in range(3)]


def test_a_full_lane_refuses_its_own_kind_only() -> None:
    async def main() -> None:
        workers = Workers(threads=2, max_pending=1, timeout=5)
        release = threading.Event()
        try:
            with in_lane(Lane.DOCUMENTS):
                held = asyncio.ensure_future(workers.run(release.wait, 5))
                await asyncio.sleep(0)
                with pytest.raises(QueueFull, match="manifests"):
                    await workers.run(sum, [1])
            assert workers.pending_in(Lane.DOCUMENTS) == 1
            assert await workers.run(sum, [1, 2]) == 3  # images: a lane of their own
            with in_lane(Lane.PDFS):
                assert await workers.run(sum, [3]) == 3
            release.set()
            assert await held is True
        finally:
            release.set()
            workers.close()

    asyncio.run(main())


def test_the_gate_admits_in_order_within_its_bounds() -> None:
    async def main() -> None:
        gate = Gate(slots=1, wait=5, line=2, what="things")
        order: list[int] = []
        first = asyncio.Event()

        async def hold(n: int, until: asyncio.Event) -> None:
            async with gate.held():
                order.append(n)
                await until.wait()

        holder = asyncio.ensure_future(hold(0, first))
        await asyncio.sleep(0)
        done = asyncio.Event()
        done.set()
        waiters = [asyncio.ensure_future(hold(n, done)) for n in (1, 2)]
        await asyncio.sleep(0)
        assert gate.holders == 1 and gate.waiting == 2
        with pytest.raises(QueueFull, match="line is full") as full:
            await hold(3, done)
        assert full.value.retry_after == 3
        first.set()
        await asyncio.gather(holder, *waiters)
        assert order == [0, 1, 2] and gate.holders == 0 and gate.waiting == 0

    asyncio.run(main())


def test_a_waiter_that_gives_up_leaves_no_slot_behind() -> None:
    async def main() -> None:
        gate = Gate(slots=1, wait=0.05, line=4, what="things")
        release = asyncio.Event()

        async def hold() -> None:
            async with gate.held():
                await release.wait()

        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match=r"none was free within 0\.05s"):
            async with gate.held():
                pass
        cancelled = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        release.set()
        await holder
        assert gate.holders == 0 and gate.waiting == 0
        async with gate.held():
            assert gate.holders == 1

    asyncio.run(main())


def _built(folder: DocumentFolder, body: bytes = b"%PDF-1.4 a document") -> Path:
    path = folder.scratch()
    path.write_bytes(body)
    return path


def _keep(folder: DocumentFolder, pages: str = "v1", body: bytes = b"%PDF-1.4 doc") -> Path:
    token = folder.begin(KEY, SOURCES)
    kept = folder.keep(KEY, token, _built(folder, body), SOURCES, pages)
    assert kept is not None and kept.path.read_bytes() == body
    return kept.path


def test_a_document_is_valid_until_one_of_its_sources_is_purged(tmp_path: Path) -> None:
    folder = DocumentFolder(tmp_path, 1024 * 1024)
    path = _keep(folder)
    found = folder.find(KEY, "v1")
    assert found is not None and found.path == path and found.size == path.stat().st_size
    assert folder.find(KEY) == found  # what HEAD asks: any pages
    assert folder.find(KEY, "v2") is None  # made from other versions of its images
    shutil.rmtree(tmp_path / SOURCES[1])  # what the disk tier's purge of that source does
    assert folder.find(KEY) is None
    assert not path.exists() and not list((tmp_path / "documents" / KEY).glob("*.json"))


def test_a_later_build_takes_the_markers_over(tmp_path: Path) -> None:
    folder = DocumentFolder(tmp_path, 1024 * 1024)
    older = _keep(folder, body=b"%PDF-1.4 old")
    token = folder.begin(KEY, SOURCES)  # a build begins: the older one no longer counts
    assert folder.find(KEY) is None and not older.exists()
    assert folder.keep(KEY, token, _built(folder, b"%PDF-1.4 new"), SOURCES, "v1") is not None
    found = folder.find(KEY, "v1")
    assert found is not None and found.path.read_bytes() == b"%PDF-1.4 new"


def test_documents_are_evicted_oldest_first_and_cleared(tmp_path: Path) -> None:
    folder = DocumentFolder(tmp_path, 4000)
    keys = [f"{n:032x}" for n in range(4)]
    for n, key in enumerate(keys):
        token = folder.begin(key, SOURCES)
        assert folder.keep(key, token, _built(folder, b"%" * 900), SOURCES, "v") is not None
        kept = folder.find(key)
        assert kept is not None
        for used in (kept.path, kept.path.with_suffix(".json")):  # an order the clock cannot blur
            os.utime(used, (1000 + n, 1000 + n))
    assert folder.find(keys[0]) is not None  # a hit: the least recently used is keys[1] now
    token = folder.begin("f" * 32, SOURCES)
    assert folder.keep("f" * 32, token, _built(folder, b"%" * 900), SOURCES, "v") is not None
    assert [folder.find(key) is not None for key in keys] == [True, False, True, True]
    assert folder.size() <= 4000 * 0.9
    too_large = _built(folder, b"%" * 1001)  # more than a quarter of the budget
    assert folder.keep(KEY, folder.begin(KEY, SOURCES), too_large, SOURCES, "v") is None
    assert too_large.exists()
    folder.clear()
    assert folder.find(keys[2]) is None and folder.size() == 0
    assert too_large.exists()  # a build's file is its own to remove


def test_a_stale_build_keeps_nothing_and_removes_no_valid_document(tmp_path: Path) -> None:
    """Two processes build the same PDF: A begins, then B (the markers are B's now). B keeps
    first; A, whose markers are gone, keeps nothing and leaves B's document and markers as
    they are (it used to remove both, and keep its own, invalid at once)."""
    a, b = DocumentFolder(tmp_path, 1024 * 1024), DocumentFolder(tmp_path, 1024 * 1024)
    token_a = a.begin(KEY, SOURCES)
    token_b = b.begin(KEY, SOURCES)
    assert b.keep(KEY, token_b, _built(b, b"%PDF-1.4 b"), SOURCES, "v1") is not None
    late = _built(a, b"%PDF-1.4 a")
    assert a.keep(KEY, token_a, late, SOURCES, "v1") is None
    assert late.exists()  # still the build's own, to serve once and remove
    found = a.find(KEY, "v1")
    assert found is not None and found.path.read_bytes() == b"%PDF-1.4 b"
    markers = [(tmp_path / s / f".document-{KEY}").read_text() for s in SOURCES]
    assert markers == [token_b] * len(SOURCES)


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_build_is_shared_and_stops_when_nobody_waits() -> None:
    async def main() -> None:
        runs: list[int] = []
        stopped: list[int] = []
        go = asyncio.Event()
        released: list[str] = []

        async def build() -> str:
            runs.append(len(runs))
            try:
                await go.wait()
            except asyncio.CancelledError:
                stopped.append(runs[-1])
                raise
            return "pdf"

        flights = Flights[str, str](lambda r: f"{r} (a link)", released.append)
        a = asyncio.ensure_future(flights.join("k", build))
        b = asyncio.ensure_future(flights.join("k", build))
        await _turns()
        go.set()
        assert await asyncio.gather(a, b) == ["pdf (a link)", "pdf (a link)"]
        assert runs == [0] and released == ["pdf"] and "k" not in flights
        go.clear()
        c = asyncio.ensure_future(flights.join("k", build))
        await _turns()
        c.cancel()  # the only caller leaves: the run stops
        with pytest.raises(asyncio.CancelledError):
            await c
        await _turns()
        assert runs == [0, 1] and stopped == [1] and "k" not in flights

    asyncio.run(main())


def test_a_finished_build_is_forgotten_without_an_error_in_the_loop() -> None:
    """The run's done-callback takes the task it is called with: a build that lands logs no
    "Exception in callback" (it used to, for every PDF built)."""

    async def main() -> list[dict[str, object]]:
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))

        async def build() -> str:
            return "pdf"

        flights = Flights[str, str](lambda r: r, lambda r: None)
        assert await flights.join("k", build) == "pdf"
        await _turns()
        assert "k" not in flights
        return errors

    assert asyncio.run(main()) == []


def test_a_request_that_joins_a_stopping_build_gets_a_build_of_its_own() -> None:
    """The only client of a build leaves; the build is stopping (its clean-up takes a few
    turns: a lock given back, say) when a new request for the same PDF comes: that request,
    which never left, gets a new build (it used to join the stopping one and be cancelled
    with it: no answer, the connection dropped)."""

    async def main() -> None:
        runs: list[int] = []
        cleaned = asyncio.Event()

        async def build() -> str:
            n = len(runs)
            runs.append(n)
            if n == 0:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    await cleaned.wait()
                    raise
            return f"pdf {n}"

        flights = Flights[str, str](lambda r: r, lambda r: None)
        first = asyncio.ensure_future(flights.join("k", build))
        await _turns()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.ensure_future(flights.join("k", build))
        await _turns()
        cleaned.set()
        assert await second == "pdf 1"
        assert runs == [0, 1]

    asyncio.run(main())


def test_a_claimed_document_outlives_its_removal(tmp_path: Path) -> None:
    """A reader's claim is a link of its own: the document can go meanwhile (evicted, taken
    over, cleared, by any process) and the reader still has it whole; a hit leaves the PDF's
    own time (its validators) as it is."""
    folder = DocumentFolder(tmp_path, 1024 * 1024)
    path = _keep(folder, body=b"%PDF-1.4 read me")
    os.utime(path, (1000, 1000))
    claimed = folder.find(KEY, "v1", claim=True)
    assert claimed is not None and claimed.path != path and claimed.path.name.startswith(".tmp-")
    folder.begin(KEY, SOURCES)  # a later build: the document is superseded
    assert folder.find(KEY) is None and not path.exists()
    assert claimed.path.read_bytes() == b"%PDF-1.4 read me"
    assert claimed.path.stat().st_mtime == 1000  # the hit touched its description only


def test_what_a_thread_makes_for_a_caller_that_left_is_released() -> None:
    """A caller cancelled while its thread makes a file (a build's new file, a reader's link):
    once the thread ends, what it made is released, not left behind."""

    async def main() -> None:
        started, finish = threading.Event(), threading.Event()
        released: list[str] = []

        def make() -> str:
            started.set()
            finish.wait(5)
            return "a file"

        caller = asyncio.ensure_future(owned(asyncio.to_thread(make), released.append))
        while not started.is_set():
            await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert released == []
        finish.set()
        while not released:
            await asyncio.sleep(0.01)
        assert released == ["a file"]
        assert await owned(asyncio.to_thread(lambda: "kept"), released.append) == "kept"
        assert released == ["a file"]

    asyncio.run(main())
