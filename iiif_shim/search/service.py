"""The search service: an object's text indexed when it is needed and kept fresh, and the
answers the web handlers, ``iiif-shim index`` and the benchmarks ask of it (hits, terms, stored
pages, a canvas's OCR file), with no aiohttp types in it.

What it keeps per object (in the index, ``index.py``): each canvas's page of words scaled to
the canvas, under a *stamp* that is the canvas's key (its text reference, format and canvas
size) and the file's stamp as its source gave it when it was read (size and time, or an ETag;
from a server that sends neither, the bytes' hash: such a file is read again at each look,
and parsed again only when it changed), and the object's *signature* (every canvas's text
reference, format and size together).

- On demand (:meth:`SearchService.ensure`): an object never indexed, or whose signature
  changed, is indexed before it is searched: one build per object per process
  (single-flight: every search of it waits for that build), at most ``build_concurrency``
  builds per process *per place its text is read from* (a text server's origin, else its
  source: :meth:`SearchService._gate_of`), so a slow or hung text server holds only the
  builds of its own objects; the others wait in that place's line (at most
  BUILD_LINE_PER_SLOT per slot), each build bounded by BUILD_TIMEOUT. A search waits up to
  ``build_wait`` seconds for it, then gets 503 with ``Retry-After`` saying whether the object
  is being indexed (the time the build expects to need) or waits for a slot (the time the
  build ahead expects); the build goes on, but one still waiting for its slot when the last
  search that wanted it has given up leaves the line (the next search starts it again).
  An object indexed longer than ``recheck`` seconds ago is looked at again in the background
  (its files' stamps, only changed pages read again) while the index answers as it is.
- A build (also what ``iiif-shim index`` runs, :meth:`SearchService.index_object`) looks at
  the canvases in order, STAMP_WINDOW at a time: a canvas with a stored page has its file's
  stamp asked and is read again only when it changed; one without is read at once (its read
  gives the stamp). Files are read by their source and parsed in the service's threads.
  Pages are stored in batches of at most BATCH_PAGES pages or BATCH_WORDS words, so a
  2,000-page object is never in memory whole. While the signature is a new one the object
  is stored under a provisional signature (an interrupted build is taken up again, its
  stored pages kept); canvases that lost their text, or are gone, are dropped at the end
  with the new signature.
- A refused file (``ocr.TextRefused``: hostile, broken, too many words; ``BadRecord`` from its
  source: too large, somewhere it may not read; gone) leaves its page without text: it is
  logged once per file and stamp, named by :class:`IndexReport`, and remembered in the index
  (an empty page whose stamp carries the reason) so it is not read again until it changes.
  A file that could not be read for a passing reason (a timeout, an upstream error) is not
  remembered: it is tried again at the next look.
- Threads: the service's own, never the image pool's. Index reads and the hit finder run on
  SEARCH_THREADS threads; what the index holds of an object (its head, its stamps: what every
  search, autocomplete and text request asks first) on HEAD_THREADS of their own, never
  behind a count; parsing and index writes on ``build_concurrency`` threads (one per build
  that may run), so a build never takes the threads searches need. Every wait is bounded:
  index calls and file reads by ``server.request_timeout`` (writes by STORE_TIMEOUT), a
  parse by PARSE_TIMEOUT.
- Counting is bounded (:attr:`SearchService.finders`): SEARCH_THREADS searches counted at
  once per process, FIND_LINE_PER_SLOT per slot more waiting (each up to half of
  ``server.request_timeout``), then 503 with ``Retry-After`` at once. A count whose caller
  gives up (its client gone: the handler cancels it; or its time out) is stopped at the next
  page it looks at, and its slot given back only once its thread is free.
- A canvas's OCR file as it is (:meth:`SearchService.ocr`): read from its source when it is
  asked for, at most OCR_READS at a time per process while it is read and sent
  (:attr:`SearchService.ocr_reads`, its callers hold it; OCR_LINE more wait, then 503), and
  named by its version (:meth:`SearchService.ocr_version`): the canvas's key and the file's
  stamp, known without reading it from what the index stored when it last looked at the
  object (within ``recheck``), so a client asking again with the ETag made of it gets its
  answer without a read.
- Hits (:meth:`SearchService.results`: a page of them and the count of all): counted on the
  object's text (``match.ObjectText``: its pages' terms, read from the index once and kept
  while the index holds the same, by its generation: ``stored.ObjectHead``; one read for
  every search that wants it; objects' texts within TEXT_BUDGET bytes in all, the least
  recently searched dropped first); an object whose text alone would take more is counted
  on the pages the index names, HIT_CHUNK at a time (and remembered as too large until it
  changes). The counts of a query are kept (HIT_ENTRIES queries, HIT_BUDGET pages with hits
  in all), so paging through them counts once; only the hits of the page asked for are made,
  from the words of their pages, the pages shown lately kept (WORDS_BUDGET bytes). The
  access policies of an object's text (its PDF's) are kept with its record.

The index itself is opened on first use (a server that searches nothing opens no file and
no connection); one that cannot be opened is a 503 (``IndexUnavailable``) and is tried again
at the next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from iiif_shim.base.errors import BadRecord, NotFound, Overloaded, ShimError
from iiif_shim.imaging.pool import Gate
from iiif_shim.model.text import Hit, PageText, Query, TextFile, TextFormat
from iiif_shim.presentation.records import ObjectRecord, TextRef
from iiif_shim.presentation.service import PresentationService
from iiif_shim.presentation.sources.base import ObjectSource
from iiif_shim.presentation.sources.texts import UNVALIDATED
from iiif_shim.search import match, ocr, words
from iiif_shim.search.index import (
    Index,
    IndexedObject,
    IndexUnavailable,
    ObjectHead,
    PackedPage,
    StoredPage,
    open_index,
)
from iiif_shim.search.match import Found, HitPage, ObjectText
from iiif_shim.search.settings import SearchSettings

log = logging.getLogger("iiif_shim")
refusals = logging.getLogger("iiif_shim.search.refused")  # each refused file, once
T = TypeVar("T")

# Measured on a 2-CPU machine, a 2,000-page object of 300-word ALTO pages: parsing is bound by
# the interpreter lock (283 pages/s on 1 thread, 236 on 2 or 4), so one thread per build; a
# batch of 64 pages is written at 498 pages/s (318 at 16, 470 at 256); a whole build about 220
# pages/s. Searches: throughput is the same on 1 to 8 threads (about 11/s for one-word queries
# of a 2,000-page object, 16 at once), but with 1 or 2 threads a short query waits behind long
# ones (prefixes over every page: p90 3.6 s and 4.4 s), with 4 it does not (p90 0.24 s).
SEARCH_THREADS = 4  # threads for index reads and the hit finder
HEAD_THREADS = 2  # threads for what the index holds of an object (never behind the hit finder)
# searches counted at once by a process (each on one of SEARCH_THREADS), and how many more may
# wait for one (each at most server.request_timeout / 2); then 503 with Retry-After at once
FIND_LINE_PER_SLOT = 4
STAMP_WINDOW = 8  # canvases of one build looked at (stamp, read, parse) at once
BATCH_PAGES = 64  # pages stored in one transaction ...
BATCH_WORDS = 100_000  # ... or this many words, whichever comes first
BUILD_LINE_PER_SLOT = 32  # objects that may wait for each build slot
PLACES = 256  # places text is read from with build slots of their own (then one for the rest)
BUILD_TIMEOUT = 1800.0  # seconds one build on demand or in the background may take
PARSE_TIMEOUT = 120.0  # seconds one file's parse may take (32 MB of ALTO: about 4 s)
STORE_TIMEOUT = 120.0  # seconds one batch's write may take
CLOSE_TIMEOUT = 30.0  # seconds closing waits for the threads' last jobs
# OCR files read and sent at once by a process (each held in memory until sent: at most
# max_text_bytes), and how many more wait for one; a harvester or a viewer asks one at a time
OCR_READS = 4
OCR_LINE = 16
MAX_HITS = 10_000  # hits listed by hits() (the first, in canvas order): about 7 MB
HIT_CHUNK = 64  # pages read from the index at once (counting without an object's text kept)
TEXT_CHUNK = 256  # pages read from the index at once while reading an object's text
TEXT_BUDGET = 64 * 1024 * 1024  # bytes of objects' text kept for the hit finder, about
LARGE = 256  # objects remembered as too large for TEXT_BUDGET
WORDS_BUDGET = 16 * 1024 * 1024  # bytes of the words of pages shown lately, kept (about)
HIT_ENTRIES = 64  # queries whose hits are kept counted ...
HIT_BUDGET = 1_000_000  # ... and pages with hits in all (12 bytes each)
SHAPES = 1024  # objects whose signature is kept (recomputed when their record changes)
LOGGED = 10_000  # refused files remembered as logged (then forgotten, and logged again)
_REFUSED = "\nrefused: "  # in a stored stamp: the page's file was refused, and why
_GONE = "(gone)"  # the file stamp of a file that is not there
_PARTIAL = "partial:"  # an object's signature while a build of a new one is under way
_ROUNDS = 3  # builds one search waits for (each may have been of an older record)


class IndexBuilding(Overloaded):
    """The object is being indexed and was not done within ``build_wait`` (503, with
    ``Retry-After``: the time the build expects to need)."""

    kind = "index_building"


class _BuildFailed(IndexUnavailable):
    """A build that failed for a fault of the shim's own (logged with its traceback)."""


@dataclass(frozen=True)
class Refusal:
    """A canvas's text file that is not indexed, and why (one line)."""

    canvas: int  # 0-based
    name: str  # where it is, as its source names it (a path or a URL)
    reason: str
    remembered: bool = True  # refused for what it is (until it changes), not a passing failure


@dataclass(frozen=True)
class IndexReport:
    """One object indexed: ``pages`` read and stored now, ``skipped`` unchanged (not read),
    ``refused`` files (refused now, or before and unchanged since), ``removed`` canvases
    dropped (their text gone), in ``seconds``."""

    object: str
    pages: int
    skipped: int
    refused: tuple[Refusal, ...]
    removed: int
    seconds: float


@dataclass(frozen=True)
class _Shape:
    """An object's canvases as indexing sees them: the signature, each canvas's size, and the
    key of each canvas with text (what its stored stamp begins with)."""

    signature: str
    sizes: tuple[tuple[int, int], ...]
    keys: dict[int, str]


@dataclass
class _Flight:
    """One build of one object under way: how far it is (for ``Retry-After``), whether it
    has its build slot yet (``running``), and who waits for it (a background look: nobody;
    one started by searches is dropped from the line when the last of them has given up)."""

    total: int
    background: bool
    gate: Gate
    droppable: bool = False
    task: asyncio.Task[IndexReport] | None = None
    done: int = 0
    running: bool = False
    waiters: int = 0
    started: float = field(default_factory=time.monotonic)

    def eta(self) -> int:
        """Seconds it expects to need still (at least 1)."""
        elapsed = time.monotonic() - self.started
        if self.done <= 0 or elapsed <= 0:
            return max(1, min(60, math.ceil(self.total / 100)))
        left = (self.total - self.done) * elapsed / self.done
        return max(1, min(600, math.ceil(left)))


@dataclass(frozen=True)
class _Result:
    """One canvas looked at by a build: the page to store (None: nothing to write), the
    file's refusal (now, or before and unchanged), and whether its file was read now."""

    page: StoredPage | None = None
    refusal: Refusal | None = None
    read: bool = False


def signature_of(record: ObjectRecord, sizes: Sequence[tuple[int, int]]) -> _Shape:
    """The object's signature and each canvas's key (sha256 of its text reference, format
    and size; the signature covers every canvas in order, those without text too)."""
    whole = hashlib.sha256()
    keys: dict[int, str] = {}
    for i, (canvas, (width, height)) in enumerate(zip(record.canvases, sizes, strict=True)):
        ref = canvas.text
        if ref is None:
            whole.update(b"-\n")
            continue
        part = json.dumps([ref.where, ref.format, width, height]).encode()
        keys[i] = hashlib.sha256(part).hexdigest()[:16]
        whole.update(part + b"\n")
    return _Shape(whole.hexdigest(), tuple(sizes), keys)


def _stored_key(stamp: str) -> str:
    return stamp.partition(_REFUSED)[0]


def _stored_refusal(stamp: str) -> str | None:
    _, found, reason = stamp.partition(_REFUSED)
    return reason if found else None


def _kept(stored: str | None, key: str, canvas: int, where: str) -> _Result | None:
    """Nothing to do for a canvas whose stored page has ``key`` (its stored refusal, if its
    file was refused); None when it must be read."""
    if stored is None or _stored_key(stored) != key:
        return None
    reason = _stored_refusal(stored)
    return _Result(refusal=None if reason is None else Refusal(canvas, where, reason))


def _format(file: TextFile | None, ref: TextRef) -> TextFormat | None:
    if file is not None and file.format is not None:
        return file.format
    try:
        return TextFormat(ref.format) if ref.format else None
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


@asynccontextmanager
async def open_search(
    settings: SearchSettings, presentation: PresentationService, origin: str
) -> AsyncIterator[SearchService]:
    """The search service of ``presentation``'s objects (its index opened on first use, from
    ``settings`` and the configuration's ``origin``); its builds stopped, its threads ended and
    its index closed on exit."""
    service = SearchService(settings, presentation, origin)
    try:
        yield service
    finally:
        await service.close()


class SearchService:
    def __init__(
        self,
        settings: SearchSettings,
        presentation: PresentationService,
        origin: str,
        opener: Callable[[SearchSettings, str], Index] = open_index,
    ) -> None:
        self.settings = settings
        self.presentation = presentation
        self.origin = origin
        self.timeout = presentation.images.settings.request_timeout
        self._opener = opener
        self._index: Index | None = None
        self._opening = asyncio.Lock()
        self._reads = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="iiif-shim-search")
        self._heads = ThreadPoolExecutor(HEAD_THREADS, thread_name_prefix="iiif-shim-search-head")
        self._writes = ThreadPoolExecutor(
            settings.build_concurrency, thread_name_prefix="iiif-shim-index"
        )
        self._gates: OrderedDict[str, Gate] = OrderedDict()
        self.finders = Gate(
            SEARCH_THREADS,
            self.timeout / 2,
            SEARCH_THREADS * FIND_LINE_PER_SLOT,
            "searches being counted",
        )
        self.ocr_reads = Gate(OCR_READS, self.timeout / 2, OCR_LINE, "OCR files being sent")
        self._flights: dict[str, _Flight] = {}
        self._shapes: OrderedDict[str, tuple[ObjectRecord, float, _Shape]] = OrderedDict()
        self._found: OrderedDict[tuple[str, int, Query], Found] = OrderedDict()
        self._kept_found = 0
        self._texts: OrderedDict[str, ObjectText] = OrderedDict()
        self._kept_text = 0
        self._reading: dict[str, tuple[int, asyncio.Task[ObjectText]]] = {}
        self._large: OrderedDict[str, int] = OrderedDict()
        self._words = match.WordsCache(WORDS_BUDGET)
        self._policies: OrderedDict[str, tuple[ObjectRecord, tuple[str, ...]]] = OrderedDict()
        self._logged: set[tuple[str, str]] = set()
        self._closed = False

    # --- what the handlers ask ----------------------------------------------------------

    async def record(self, name: str) -> ObjectRecord:
        """Object ``name`` (``presentation.record``); 404 when it has no text."""
        record = await self.presentation.record(name)
        if not record.has_text:
            raise NotFound(f"object {name[:100]!r} has no text")
        return record

    def policies(self, record: ObjectRecord) -> tuple[str, ...]:
        """The access policies the text of ``record`` needs: its PDF's
        (``PresentationService.pdf_policies``: its own and its images' routes', one route
        looked up per canvas), kept while the record is the same one."""
        kept = self._policies.get(record.name)
        if kept is not None and kept[0] is record:
            self._policies.move_to_end(record.name)
            return kept[1]
        found = self.presentation.pdf_policies(record)
        self._policies[record.name] = (record, found)
        self._policies.move_to_end(record.name)
        while len(self._policies) > SHAPES:
            self._policies.popitem(last=False)
        return found

    async def ensure(self, record: ObjectRecord) -> ObjectHead:
        """What the index holds of ``record`` (without its pages), indexed first if it never
        was or its signature changed (waiting up to ``build_wait``, then
        :class:`IndexBuilding`); an index older than ``recheck`` seconds is looked at again in
        the background."""
        shape = await self._shape(record)
        deadline = time.monotonic() + self.settings.build_wait
        for _ in range(_ROUNDS):
            state = await self._run(self._heads, self.timeout, partial(_head, name=record.name))
            if state is not None and state.signature == shape.signature:
                if time.time() - state.checked >= self.settings.recheck:
                    self._start(record, shape, background=True)
                return state
            flight = self._start(record, shape, background=False, droppable=True)
            assert flight is not None and flight.task is not None
            flight.waiters += 1
            try:
                left = max(deadline - time.monotonic(), 0)
                await asyncio.wait_for(asyncio.shield(flight.task), left)
            except TimeoutError:
                raise self._building(record, flight) from None
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not flight.task.cancelled() or me is None or me.cancelling():
                    raise
                continue  # its build left the line as this search came: it is started again
            finally:
                flight.waiters -= 1
                if flight.droppable and not flight.running and flight.waiters == 0:
                    flight.task.cancel()  # nobody waits for it now: it leaves the line
            # that build may have been of an older record: its state is looked at again
        raise IndexUnavailable(
            f"object {record.name[:100]!r} was indexed {_ROUNDS} times and is still not "
            "current (is its source changing all the time?)"
        )

    def _building(self, record: ObjectRecord, flight: _Flight) -> IndexBuilding:
        """The 503 of a search that waited ``build_wait`` for ``flight``: the object is being
        indexed (how far), or waits for a build slot (how many ahead)."""
        name = record.name[:100]
        if flight.running:
            return IndexBuilding(
                f"object {name!r} is being indexed ({flight.done} of {flight.total} pages "
                "done); retry in a while",
                retry_after=flight.eta(),
            )
        gate = flight.gate
        ahead = [f for f in self._flights.values() if f.gate is gate and f.running]
        return IndexBuilding(
            f"object {name!r} is waiting for an indexing slot ({gate.holders} objects from "
            f"the same place being indexed, {gate.waiting} waiting, this one included); retry in "
            "a while",
            retry_after=min((f.eta() for f in ahead), default=10),
        )

    def _gate_of(self, record: ObjectRecord) -> Gate:
        """The build slots of the place ``record``'s text is read from (a text server's
        origin, else its source): each place has ``build_concurrency`` of its own, and its
        own line, so a slow or hung text server holds only the builds of its objects."""
        place = f"source {record.source}"
        ref = next((c.text for c in record.canvases if c.text is not None), None)
        if ref is not None:
            with contextlib.suppress(ValueError):
                split = urlsplit(ref.where)
                if split.scheme in ("http", "https") and split.netloc:
                    place = f"{split.scheme}://{split.netloc.lower()}"
        gate = self._gates.get(place)
        if gate is None and len(self._gates) >= PLACES:  # (never in practice: text URLs are
            place = "(other)"  # under text_origins) the others share one
            gate = self._gates.get(place)
        if gate is None:
            slots = self.settings.build_concurrency
            gate = Gate(slots, BUILD_TIMEOUT, slots * BUILD_LINE_PER_SLOT, "objects being indexed")
            self._gates[place] = gate
        return gate

    async def hits(self, record: ObjectRecord, query: Query) -> list[Hit]:
        """Every hit of ``query`` in ``record`` (at most MAX_HITS), in canvas then reading
        order (for tools and tests: a search shows a page of them, :meth:`results`)."""
        return list((await self.results(record, query, 0, MAX_HITS)).hits)

    async def results(self, record: ObjectRecord, query: Query, start: int, stop: int) -> HitPage:
        """The hits ``start`` to ``stop`` (excluded, 0-based, canvas then reading order) of
        ``query`` in ``record``, with the number of all of them (and of the lines they
        cover). The hits are counted on the object's text (read once from the index and kept
        while the index holds the same, within TEXT_BUDGET; a larger object's pages are
        read HIT_CHUNK at a time, those the index names), and kept counted per query; only
        the hits shown are made, from their pages' words."""
        head = await self.ensure(record)
        async with self.finders.held():  # (full: 503 at once; the line: a bounded wait)
            text = await self._text(record.name, len(record.canvases), head)
            # (a text read while the object changed has generation 0: its counts are not kept)
            key = (record.name, head.generation if text is None else text.generation, query)
            kept = self._found.get(key) if key[1] else None
            if kept is not None:
                self._found.move_to_end(key)
            found, shown = await self._find(
                partial(
                    _hits, name=record.name, text=text, query=query, found=kept,
                    start=start, stop=stop, cache=self._words,
                )
            )  # fmt: skip
        if kept is None and key[1]:
            self._keep(key, found)
        return shown

    async def terms(
        self, record: ObjectRecord, prefix: str, least: int = 1
    ) -> list[tuple[str, int]]:
        """The terms of ``record`` beginning with ``prefix`` (folded), each occurring at
        least ``least`` times, as written most often (``Zürich``), with their counts; at
        most ``search.terms``."""
        folded = words.fold(prefix).strip()
        await self.ensure(record)
        if not folded:
            return []
        limit = self.settings.terms
        return await self._read(lambda index: index.terms(record.name, folded, least, limit))

    async def pages(
        self, record: ObjectRecord, canvases: Sequence[int] | None = None
    ) -> list[StoredPage]:
        """The stored pages of ``canvases`` (0-based; all by default) that have text, in
        canvas order."""
        await self.ensure(record)
        wanted = range(len(record.canvases)) if canvases is None else canvases
        chosen = sorted({i for i in wanted if 0 <= i < len(record.canvases)})
        chosen = [i for i in chosen if record.canvases[i].text is not None]
        if not chosen:
            return []
        return await self._read(lambda index: index.pages(record.name, chosen))

    async def ocr_version(
        self, record: ObjectRecord, canvas: int, file: TextFile | None = None
    ) -> str | None:
        """What names canvas ``canvas``'s (0-based) OCR file as it is sent: the canvas's key
        (its text reference, format and size) and the file's stamp, that of ``file`` when it
        was just read, else the one the index stored when it last looked at the object, if
        that was less than ``recheck`` seconds ago (an older look is started again in the
        background); None when it is not known without reading the file."""
        shape = await self._shape(record)
        key = shape.keys.get(canvas)
        if key is None:
            return None
        if file is not None:
            return f"{key} {file.stamp}"
        state = await self._state(record.name)
        if state is None or state.signature != shape.signature:
            return None
        if time.time() - state.checked >= self.settings.recheck:
            self._start(record, shape, background=True)
            return None
        stored = state.stamps.get(canvas)
        kept = None if stored is None else _stored_key(stored)
        if kept is None or not kept.startswith(f"{key} "):
            return None
        stamp = kept.removeprefix(f"{key} ")
        return None if stamp in ("?", _GONE, UNVALIDATED) else kept

    async def ocr(self, record: ObjectRecord, canvas: int) -> TextFile:
        """Canvas ``canvas``'s (0-based) text file as its source reads it now; 404 when it has
        none or it is gone. Its callers hold :attr:`ocr_reads` while they read and send it."""
        if not 0 <= canvas < len(record.canvases) or record.canvases[canvas].text is None:
            raise NotFound(f"canvas {canvas + 1} of object {record.name[:100]!r} has no text")
        ref = record.canvases[canvas].text
        assert ref is not None
        source = self.presentation.source(record.source)
        async with asyncio.timeout(self.timeout):
            found = await source.read_text(ref, self.settings.max_text_bytes)
        if found is None:
            raise NotFound(f"the text of canvas {canvas + 1} of object {record.name[:100]!r} "
                           "is not there")  # fmt: skip
        return found

    async def index_object(
        self,
        record: ObjectRecord,
        *,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> IndexReport:
        """``record`` indexed now (what ``iiif-shim index`` runs): only changed files read,
        every file with ``force``; a build of it under way is waited for first. ``progress``
        is told of each page done (read, unchanged or refused). Not bounded as a whole (each
        file's stamp, read, parse and each write are)."""
        shape = await self._shape(record)
        running = self._flights.get(record.name)
        if running is not None and running.task is not None:
            await asyncio.wait({running.task})  # (whatever its end: this one is run anew)
        flight = self._start(
            record, shape, background=False, force=force, progress=progress, limit=None
        )
        assert flight is not None and flight.task is not None
        return await asyncio.shield(flight.task)

    async def drop(self, name: str) -> None:
        """Forget object ``name`` (its source no longer has it, or it has no text now)."""
        await self._write(lambda index: index.drop(name))

    async def indexed(self) -> list[str]:
        """Every object the index holds."""
        return await self._read(lambda index: index.objects())

    async def size(self) -> int:
        """Bytes the index takes."""
        return await self._read(lambda index: index.size())

    async def close(self) -> None:
        """Stop the builds under way, end the threads (waiting at most CLOSE_TIMEOUT for the
        jobs they run) and close the index."""
        self._closed = True
        for _, reading in self._reading.values():
            reading.cancel()
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        ended = True
        for executor in (self._reads, self._heads, self._writes):
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(executor.shutdown, True, cancel_futures=True),
                    CLOSE_TIMEOUT,
                )
            except TimeoutError:
                log.warning("search: a job of the index was still running after %gs; the "
                            "index is left open", CLOSE_TIMEOUT)  # fmt: skip
                ended = False
        if self._index is not None and ended:
            index, self._index = self._index, None
            await asyncio.to_thread(index.close)

    def stop_background(self) -> None:
        """Stop the background looks under way (a reload: they are the old configuration's);
        builds somebody waits for go on."""
        for flight in list(self._flights.values()):
            if flight.background and flight.task is not None:
                flight.task.cancel()

    # --- the index, in threads ---------------------------------------------------------

    async def _opened(self) -> Index:
        if self._index is not None:
            return self._index
        if self._closed:
            raise IndexUnavailable("the search index is closed (the server is stopping)")
        async with self._opening:
            if self._index is None:
                loop = asyncio.get_running_loop()
                job = loop.run_in_executor(self._writes, self._opener, self.settings, self.origin)
                try:
                    async with asyncio.timeout(self.timeout):
                        self._index = await job
                except TimeoutError:
                    raise IndexUnavailable(
                        f"the search index was not opened within {self.timeout:g}s"
                    ) from None
            return self._index

    async def _run(
        self, executor: ThreadPoolExecutor, timeout: float, fn: Callable[[Index], T]
    ) -> T:
        """``fn(index)`` on one of ``executor``'s threads, within ``timeout`` seconds."""
        index = await self._opened()
        job = asyncio.get_running_loop().run_in_executor(executor, fn, index)
        try:
            async with asyncio.timeout(timeout):
                return await job
        except TimeoutError:
            raise IndexUnavailable(f"the search index did not answer within {timeout:g}s") from None

    async def _read(self, fn: Callable[[Index], T]) -> T:
        return await self._run(self._reads, self.timeout, fn)

    async def _write(self, fn: Callable[[Index], T]) -> T:
        return await self._run(self._writes, STORE_TIMEOUT, fn)

    async def _find(self, fn: Callable[[Index, threading.Event], T]) -> T:
        """``fn(index, stop)`` on one of the search threads, within ``server.request_timeout``;
        ``stop`` is set when its caller gives up (its client gone: cancelled; or the time
        out), and the call waits for the thread to notice (at a page), so the slot of
        :attr:`finders` its caller holds is given back only when the thread is free."""
        index = await self._opened()
        stop = threading.Event()
        job = asyncio.get_running_loop().run_in_executor(self._reads, fn, index, stop)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(job)
        except TimeoutError:
            raise IndexUnavailable(
                f"the search was not answered within {self.timeout:g}s"
            ) from None
        finally:
            if not job.done():
                stop.set()
                await asyncio.wait({job}, timeout=self.timeout)
            if job.done() and not job.cancelled():
                job.exception()  # (retrieved: a Stopped or an error nobody waits for now)

    def _state(self, name: str) -> Awaitable[IndexedObject | None]:
        return self._run(self._heads, self.timeout, partial(_state, name=name))

    def _keep(self, key: tuple[str, int, Query], found: Found) -> None:
        self._found[key] = found
        self._kept_found += len(found.canvases)
        while len(self._found) > HIT_ENTRIES or self._kept_found > HIT_BUDGET:
            _, old = self._found.popitem(last=False)
            self._kept_found -= len(old.canvases)

    async def _text(self, name: str, canvases: int, head: ObjectHead) -> ObjectText | None:
        """Object ``name``'s text for the hit finder: the one kept if the index still holds
        the same (its generation), else read now (once for every search that wants it) and
        kept; None when it would take more than TEXT_BUDGET (remembered until it changes)."""
        kept = self._texts.get(name)
        if kept is not None and kept.generation == head.generation:
            self._texts.move_to_end(name)
            return kept
        if self._large.get(name) == head.generation:
            return None
        reading = self._reading.get(name)
        if reading is None or reading[0] != head.generation:
            read = partial(_read_text, name=name, canvases=canvases, limit=TEXT_BUDGET)
            task = asyncio.get_running_loop().create_task(self._read(read))
            reading = (head.generation, task)
            self._reading[name] = reading

            def done(task: asyncio.Task[ObjectText], reading: Any = reading) -> None:
                if self._reading.get(name) is reading:
                    del self._reading[name]
                if not task.cancelled():
                    task.exception()  # retrieved: whoever waited for it was told

            task.add_done_callback(done)
        try:
            async with asyncio.timeout(self.timeout):
                text = await asyncio.shield(reading[1])
        except TimeoutError:
            raise IndexUnavailable(
                f"the text of object {name[:100]!r} was not read within {self.timeout:g}s"
            ) from None
        except match.TooLarge:
            self._large[name] = head.generation
            self._large.move_to_end(name)
            while len(self._large) > LARGE:
                self._large.popitem(last=False)
            return None
        if (old := self._texts.pop(name, None)) is not None:
            self._kept_text -= old.size
        self._texts[name] = text
        self._kept_text += text.size
        while self._kept_text > TEXT_BUDGET and self._texts:
            _, old = self._texts.popitem(last=False)
            self._kept_text -= old.size
        return text

    # --- what is indexed -----------------------------------------------------------------

    async def _shape(self, record: ObjectRecord) -> _Shape:
        """``record``'s signature and canvas keys; kept while the record is the same one
        (records are cached by the presentation service) and younger than ``recheck``."""
        kept = self._shapes.get(record.name)
        now = time.monotonic()
        if kept is not None and kept[0] is record and now - kept[1] < self.settings.recheck:
            self._shapes.move_to_end(record.name)
            return kept[2]
        async with asyncio.timeout(self.timeout):
            pictures = await self.presentation.pictures(record)
        shape = signature_of(record, [(p.width, p.height) for p in pictures])
        self._shapes[record.name] = (record, now, shape)
        self._shapes.move_to_end(record.name)
        while len(self._shapes) > SHAPES:
            self._shapes.popitem(last=False)
        return shape

    def _start(
        self,
        record: ObjectRecord,
        shape: _Shape,
        *,
        background: bool,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
        limit: float | None = BUILD_TIMEOUT,
        droppable: bool = False,
    ) -> _Flight | None:
        """The build of ``record`` under way, else one started (taking at most ``limit``
        seconds once it has a build slot); a background look is not started when a build is
        under way or the line for build slots is full (None)."""
        running = self._flights.get(record.name)
        if running is not None and running.task is not None and running.task.done():
            running = None  # (ended, or left the line: its callback has not run yet)
        if running is not None and not force:
            return None if background else running
        if self._closed:
            raise IndexUnavailable("the search index is closed (the server is stopping)")
        gate = self._gate_of(record)
        if background and gate.full:
            return None  # a background look waits for a quieter moment
        flight = _Flight(len(shape.keys), background, gate, droppable)

        async def run() -> IndexReport:
            try:
                async with gate.held(), asyncio.timeout(limit):
                    flight.running = True
                    flight.started = time.monotonic()
                    return await self._build(record, shape, force, flight, progress)
            except TimeoutError:
                raise IndexUnavailable(
                    f"indexing object {record.name[:100]!r} took more than {limit:g}s"
                ) from None
            except (ShimError, asyncio.CancelledError):
                raise
            except Exception as exc:  # never a 500 for whoever waits: a 503, logged below
                raise _BuildFailed(
                    f"indexing object {record.name[:100]!r} failed (the server's log says why)"
                ) from exc

        task = asyncio.get_running_loop().create_task(run())
        flight.task = task
        self._flights[record.name] = flight

        def done(task: asyncio.Task[IndexReport]) -> None:
            if self._flights.get(record.name) is flight:
                del self._flights[record.name]
            if task.cancelled():
                return
            exc = task.exception()  # retrieved, and said once (its waiters may have gone)
            if exc is None:
                return
            if isinstance(exc, _BuildFailed):  # a fault of the shim's own: its traceback
                log.error("search: indexing object %r failed", record.name, exc_info=exc.__cause__)
            else:
                text = exc.public_text() if isinstance(exc, ShimError) else repr(exc)
                log.warning("search: indexing object %r failed: %s", record.name, text)

        task.add_done_callback(done)
        return flight

    async def _build(
        self,
        record: ObjectRecord,
        shape: _Shape,
        force: bool,
        flight: _Flight,
        progress: Callable[[int], None] | None,
    ) -> IndexReport:
        started = time.monotonic()
        name = record.name
        source = self.presentation.source(record.source)
        state = await self._state(name)
        stored = dict(state.stamps) if state is not None else {}
        fresh = state is not None and state.signature == shape.signature
        # while a new signature is being built, the object is under a provisional one: a
        # build cut short is taken up again (its stored pages kept), never taken as done
        writing = shape.signature if fresh else f"{_PARTIAL}{shape.signature}"
        checked = state.checked if state is not None and fresh else 0.0
        batch: list[StoredPage] = []
        batch_words = 0
        read = skipped = refused_now = 0
        changed = False  # a page written
        refused: list[Refusal] = []

        def look(i: int) -> asyncio.Task[_Result]:
            return loop.create_task(self._page(source, record, i, shape, stored.get(i), force))

        # in canvas order, STAMP_WINDOW canvases looked at ahead of the one being taken
        loop = asyncio.get_running_loop()
        ahead = iter(sorted(shape.keys))
        window = deque(look(i) for i in itertools.islice(ahead, STAMP_WINDOW))
        try:
            while window:
                result = await window.popleft()
                if (following := next(ahead, None)) is not None:
                    window.append(look(following))
                flight.done += 1
                if progress is not None:
                    progress(1)
                if result.refusal is not None:
                    refused.append(result.refusal)
                    refused_now += result.read and result.refusal.remembered  # (now)
                elif result.read:
                    read += 1
                else:
                    skipped += 1
                if result.page is None:
                    continue
                changed = True
                batch.append(result.page)
                batch_words += sum(len(line.words) for line in result.page.page.lines)
                if len(batch) >= BATCH_PAGES or batch_words >= BATCH_WORDS:
                    await self._store(name, writing, batch, (), checked)
                    batch, batch_words = [], 0
        finally:
            for task in window:
                task.cancel()
        removed = sorted(i for i in stored if i not in shape.keys)
        if fresh and not changed and not removed:
            await self._write(lambda index: index.touch(name))
        else:
            await self._store(name, shape.signature, batch, removed, None)
        report = IndexReport(
            name, read, skipped, tuple(refused), len(removed), time.monotonic() - started
        )
        if changed or removed:
            if (metrics := self.presentation.images.metrics) is not None:
                metrics.search_indexed(read, refused_now)
            log.info("search: object %r indexed: %d pages read, %d unchanged, %d refused, "
                     "%d removed, in %.1fs", name, report.pages, report.skipped,
                     len(report.refused), report.removed, report.seconds)  # fmt: skip
        return report

    async def _page(
        self,
        source: ObjectSource[Any],
        record: ObjectRecord,
        canvas: int,
        shape: _Shape,
        stored: str | None,
        force: bool,
    ) -> _Result:
        """Canvas ``canvas`` looked at: nothing to do when its stored page is current (its
        stored refusal, if it was refused), else its file read and parsed into its new page
        (an empty one for a file refused now); a file not read for a passing reason leaves
        the stored page as it is. Its stamp is asked first only when a page is stored (a file
        read anyway is not asked for twice: its read gives its stamp)."""
        ref = record.canvases[canvas].text
        assert ref is not None
        where = ref.where
        gone = f"{shape.keys[canvas]} {_GONE}"
        if stored is not None and not force:
            try:
                async with asyncio.timeout(self.timeout):
                    stamp = await source.text_stamp(ref)
            except (ShimError, TimeoutError) as exc:
                return self._passing(record, canvas, where, exc)
            key = f"{shape.keys[canvas]} {stamp}" if stamp is not None else gone
            if (kept := _kept(stored, key, canvas, where)) is not None:
                return kept
            if stamp is None:
                return self._refused(record, canvas, where, key, "it is not there", ref)
        try:
            async with asyncio.timeout(self.timeout):
                file = await source.read_text(ref, self.settings.max_text_bytes)
        except BadRecord as exc:
            key = f"{shape.keys[canvas]} {await self._stamp_of(source, ref)}"
            return self._refused(record, canvas, where, key, exc.public_text(), ref)
        except (ShimError, TimeoutError) as exc:
            return self._passing(record, canvas, where, exc)
        if file is None:
            if not force and (kept := _kept(stored, gone, canvas, where)) is not None:
                return kept
            return self._refused(record, canvas, where, gone, "it is not there", ref)
        # the read's own stamp is kept (a server that gives no validator: the bytes' hash,
        # so a file read again to know is not parsed again when it is the same)
        key = f"{shape.keys[canvas]} {file.stamp}"
        if not force and (kept := _kept(stored, key, canvas, where)) is not None:
            return kept
        width, height = shape.sizes[canvas]
        fmt = _format(file, ref)
        parse = partial(_parse, file.data, fmt, file.name, self.settings.max_words, width, height)
        del file  # its bytes are the parse's alone now
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(PARSE_TIMEOUT):
                page = await loop.run_in_executor(self._writes, parse)
        except ocr.TextRefused as exc:
            return self._refused(record, canvas, where, key, str(exc), ref)
        except TimeoutError:
            why = f"not parsed within {PARSE_TIMEOUT:g}s"
            return self._refused(record, canvas, where, key, why, ref)
        return _Result(StoredPage(canvas, key, page), read=True)

    async def _stamp_of(self, source: ObjectSource[Any], ref: TextRef) -> str:
        """The stamp of a file its source refused to read (too large, not a regular file...),
        so that it is refused again without being read until it changes; "?" when even that
        cannot be had (then it is read again at the next look)."""
        try:
            async with asyncio.timeout(self.timeout):
                stamp = await source.text_stamp(ref)
        except (ShimError, TimeoutError):
            return "?"
        return stamp if stamp is not None else _GONE

    def _refused(
        self, record: ObjectRecord, canvas: int, where: str, key: str, why: str, ref: TextRef
    ) -> _Result:
        """A file refused now: an empty page kept for it, its stamp carrying why."""
        reason = _one_line(why)
        self._log_once(record, canvas, where, key, reason)
        empty = PageText((), _format(None, ref) or TextFormat.PLAIN)
        page = StoredPage(canvas, f"{key}{_REFUSED}{reason}", empty)
        return _Result(page, Refusal(canvas, where, reason), read=True)

    def _passing(
        self, record: ObjectRecord, canvas: int, where: str, exc: ShimError | TimeoutError
    ) -> _Result:
        """A file not read for a passing reason: not remembered, tried again next time."""
        why = exc.public_text() if isinstance(exc, ShimError) else (
            f"not read within server.request_timeout ({self.timeout:g}s)"
        )  # fmt: skip
        reason = _one_line(f"not read now: {why}")
        self._log_once(record, canvas, where, "", reason)
        return _Result(refusal=Refusal(canvas, where, reason, remembered=False), read=True)

    def _log_once(
        self, record: ObjectRecord, canvas: int, where: str, key: str, reason: str
    ) -> None:
        seen = (where, f"{key} {reason}")
        if seen in self._logged:
            return
        if len(self._logged) >= LOGGED:
            self._logged.clear()
        self._logged.add(seen)
        refusals.warning("search: object %r, canvas %d: text file %s refused: %s", record.name,
                    canvas + 1, where, reason)  # fmt: skip

    def _store(
        self,
        name: str,
        signature: str,
        pages: Sequence[StoredPage],
        removed: Sequence[int],
        checked: float | None,
    ) -> Awaitable[None]:
        pages = list(pages)
        return self._write(lambda index: index.store(name, signature, pages, removed, checked))


def _parse(
    data: bytes, fmt: TextFormat | None, name: str, max_words: int, width: int, height: int
) -> PageText:
    """One file's page, scaled to its canvas (in a thread: blocking)."""
    return ocr.parse(data, fmt, name, max_words).scaled(width, height)


def _read_text(index: Index, name: str, canvases: int, limit: int) -> ObjectText:
    """Object ``name``'s text for the hit finder (in a thread: blocking): its ``canvases``
    canvases' pages read TEXT_CHUNK at a time; :class:`match.TooLarge` past ``limit`` bytes.
    Its generation: the index's when every chunk was read at the same one, else 0 (none: it
    is read again at the next search)."""
    generations: set[int] = set()

    def pages() -> Iterator[PackedPage]:
        for start in range(0, canvases, TEXT_CHUNK):
            generation, found = index.packed(name, range(start, min(start + TEXT_CHUNK, canvases)))
            generations.add(generation)
            yield from found

    text = ObjectText.build(0, pages(), limit)
    generation = generations.pop() if len(generations) == 1 else 0
    return dataclasses.replace(text, generation=generation)


def _head(index: Index, name: str) -> ObjectHead | None:
    return index.head(name)


def _state(index: Index, name: str) -> IndexedObject | None:
    return index.state(name)


def _count(
    index: Index, name: str, text: ObjectText | None, query: Query, stop: threading.Event
) -> Found:
    """The hits of ``query`` counted on ``text``; without it, on the pages the index says
    may hold it, HIT_CHUNK at a time (in a thread: blocking; ``match.Stopped`` once ``stop``
    is set)."""
    if text is not None:
        return match.find(text, query, stop.is_set)
    canvases = index.matching(name, query)
    parts = []
    for start in range(0, len(canvases), HIT_CHUNK):
        if stop.is_set():
            raise match.Stopped
        _, packed = index.packed(name, canvases[start : start + HIT_CHUNK])
        parts.append(match.find(ObjectText.build(0, packed), query, stop.is_set))
    return Found.joined(parts)


def _hits(
    index: Index,
    given_up: threading.Event,
    name: str,
    text: ObjectText | None,
    query: Query,
    found: Found | None,
    start: int,
    stop: int,
    cache: match.WordsCache,
) -> tuple[Found, HitPage]:
    """The hits of ``query`` counted (unless ``found`` already), and those ``start`` to
    ``stop`` made from their pages' words (in a thread: blocking; ``match.Stopped`` once
    ``given_up`` is set)."""
    if found is None:
        found = _count(index, name, text, query, given_up)
    return found, match.show(
        name, text, query, found, start, stop, lambda wanted: index.packed(name, wanted), cache
    )
