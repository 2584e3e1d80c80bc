"""The PDF of an object, made within bounds that fit the request's deadline (``web/presentation.py``
serves it), with no aiohttp types in it.

- What a PDF is made of (:class:`PdfPlan`): one Image API request per canvas, its image fitted in
  ``pdf_page_size``, prepared (facts, plan) before anything is rendered, so the plans' keys say
  which version of every image its pages show.
- Kept: a PDF once built is kept in the disk tier's folder (``cache/documents.py``, within
  ``pdf_cache_bytes``) and served from there until any of its images is purged or changes;
  ``HEAD`` learns its length from there (:meth:`PdfMaker.known_size`) without rendering. Only
  what no purge can have reached is kept: before a PDF's facts are read the process hears of
  every purge written so far (``Caches.hear``: the journals read at once, not up to a second
  later) and notes where it stands (:class:`Heard`); the build writes its markers before it
  renders, and keeps its PDF only if, the journals read again, no purge of its images came
  since (a purge after the markers were written removes them: nothing is kept either). A page
  from this process's memory, which hears of another process's purge up to a second late,
  cannot make a kept PDF from before a purge.
- One build per PDF at a time in a process (single-flight, :class:`Flights`): requests for a PDF
  being built wait for that build, and a build stops as soon as no request waits for it any
  more (every client gone, or past its deadline): no further page is asked for (the one being
  rendered finishes, as a thread cannot be stopped). A request that comes while a build is
  stopping starts a new one.
- At most ``pdf_concurrency`` builds at once per process; the others wait in line, at most
  ``pdf_wait`` seconds, then get 503 with ``Retry-After`` (``imaging.pool.Gate``).
- A build's pool jobs count in the ``pdfs`` lane (``imaging.pool``), so PDFs cannot fill the
  queue images need. Each page is rendered through the Image API (the memory budget and the
  image caches apply), embedded as it is (``pdf.py``) and written to a file as it comes: a
  PDF is never held whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Coroutine, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

from iiif_shim.base.errors import QueueFull, ShimError
from iiif_shim.base.lanes import Lane, in_lane
from iiif_shim.cache.documents import DocumentFolder, DocumentStore, owned
from iiif_shim.cache.entry import source_key
from iiif_shim.core.service import ImageService, Prepared
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.imaging.pool import Gate
from iiif_shim.model.plan import Rendered
from iiif_shim.presentation.documents import Picture, thumb_size
from iiif_shim.presentation.pdf import PdfWriter, jpeg_size
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.settings import PresentationSettings

# bumped when the writer's output changes: PDFs kept by an earlier release are not reused
_FORMAT = 1
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
# PDFs that may wait in line per build slot; more get 503 at once (they would time out anyway)
_LINE_PER_SLOT = 8


def record_key(record: ObjectRecord, page_size: int) -> str:
    """What a PDF is of, as far as the object's record says (no image facts): 32 hex digits."""
    what = [_FORMAT, record.source, record.name, record.label, page_size]
    what.append([canvas.image for canvas in record.canvases])
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PdfPlan:
    """Everything a PDF is made of, known before any page is rendered."""

    key: str  # record_key: what it is of
    title: str
    pages: tuple[Prepared, ...]
    sources: tuple[str, ...]  # each page's source key in the cache tiers (what purges name)
    digest: str | None  # of the pages' plan keys; None: a page has no version (never kept)
    heard: Heard  # the purges this process had heard of before any of it was read


@dataclass(frozen=True)
class Heard:
    """Where this process stood in the purges of each source of a PDF (``Caches.generation``),
    taken before anything of it is read: a PDF is kept only if no purge of them came since."""

    generations: tuple[tuple[str, tuple[int, int]], ...]


@dataclass(frozen=True)
class PdfFile:
    """A PDF for one request: its file, the caller's own (a link: removed once sent), its size,
    and whether a copy of it is ``kept`` (then ranges of it can be served from there)."""

    path: Path
    size: int
    kept: bool


@dataclass(eq=False)
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    waiters: int = field(default=0)


class Flights(Generic[K, T]):
    """One run of each piece of work at a time (by ``ident``), shared by the callers that ask
    for it while it runs, and stopped as soon as none of them waits for it any more. Each
    caller gets ``claim(result)`` (its own share of it); once the last caller has its share,
    ``release(result)`` (the run's own is nobody's any more)."""

    def __init__(self, claim: Callable[[T], T], release: Callable[[T], None]) -> None:
        self._claim = claim
        self._release = release
        self._running: dict[K, _Flight[T]] = {}

    def __iter__(self) -> Iterator[K]:
        """The idents of the runs under way."""
        return iter(list(self._running))

    async def join(self, ident: K, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of the run of ``ident``, joined or started (``start()``). Cancelling the
        call stops the run once no other caller waits for it."""
        while True:
            flight = self._running.get(ident)
            if flight is None:  # (a run nobody waits for is never found here: see _leave)
                flight = _Flight(asyncio.get_running_loop().create_task(start()))
                self._running[ident] = flight
                flight.task.add_done_callback(partial(self._landed, ident, flight))
            flight.waiters += 1
            try:
                return self._claim(await asyncio.shield(flight.task))
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling() == 0 and flight.task.cancelled():
                    continue  # stopped for callers that left, not for this one: a new run
                raise
            finally:
                self._leave(ident, flight)

    def _leave(self, ident: K, flight: _Flight[T]) -> None:
        flight.waiters -= 1
        if flight.waiters:
            return
        if self._running.get(ident) is flight:  # from now on, a caller starts a new run
            del self._running[ident]
        if not flight.task.done():
            flight.task.cancel()  # nobody waits for it any more: stop
        elif not flight.task.cancelled() and flight.task.exception() is None:
            self._release(flight.task.result())  # every caller has its own share

    def _landed(self, ident: K, flight: _Flight[T], task: asyncio.Task[T]) -> None:
        """The run is over (the task's done-callback): a newcomer starts a new run."""
        if self._running.get(ident) is flight:
            del self._running[ident]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: the callers got it through their own await


class PdfMaker:
    def __init__(self, settings: PresentationSettings, images: ImageService) -> None:
        self.settings = settings
        self.images = images
        self.metrics = images.metrics
        disk = images.settings.cache.disk
        self.store: DocumentStore | None = None
        if disk is not None and settings.pdf_cache_bytes > 0:
            self.store = DocumentStore(disk, settings.pdf_cache_bytes)
        slots = settings.pdf_concurrency or max(1, images.workers.threads // 2)
        self.gate = Gate(slots, settings.pdf_wait, slots * _LINE_PER_SLOT, "PDFs being made")
        self._flights: Flights[tuple[str, str], PdfFile] = Flights(_claimed, _discard)

    async def heard(self, record: ObjectRecord) -> Heard:
        """Where this process stands in the purges of ``record``'s images (routed, nothing
        read), once it has heard of every purge written so far (its own included): taken
        before its pictures and :meth:`plan` read their facts."""
        router, caches = self.images.router, self.images.caches
        await caches.hear()
        sources = set()
        for canvas in record.canvases:
            try:
                target = router.route(canvas.image)
            except ShimError:
                continue  # not an image this server has: the pictures will say so
            sources.add(source_key(target.backend, target.native_id))
        return Heard(tuple((s, caches.generation(s)) for s in sorted(sources)))

    async def plan(
        self, record: ObjectRecord, pictures: Sequence[Picture], heard: Heard
    ) -> PdfPlan:
        """The pages of ``record``'s PDF, prepared (image facts, plans), nothing rendered;
        ``heard``: taken (:meth:`heard`) before ``pictures`` were read."""
        pages = []
        for picture in pictures:
            w, h = thumb_size(*picture.max_size, self.settings.pdf_page_size)
            page = parse_image_request(
                Version.V3, picture.identifier, "full", f"{w},{h}", "0", "default.jpg"
            )
            pages.append(await self.images.prepare(page))
        keys = [page.plan.key for page in pages]
        digest = None
        if all(keys):
            digest = hashlib.sha256("\n".join(k or "" for k in keys).encode()).hexdigest()
        return PdfPlan(
            key=record_key(record, self.settings.pdf_page_size),
            title=record.label,
            pages=tuple(pages),
            sources=tuple(
                source_key(p.source.target.backend, p.source.target.native_id) for p in pages
            ),
            digest=digest,
            heard=heard,
        )

    async def admit(self, record: ObjectRecord) -> None:
        """503 at once when ``record``'s PDF would find the line of builds full (neither kept
        nor being built): before its images' facts are looked up for nothing."""
        if not self.gate.full:
            return
        key = record_key(record, self.settings.pdf_page_size)
        if any(ident[0] == key for ident in self._flights):
            return  # it would join that build
        if self.store is not None and await self.store.find(key) is not None:
            return  # kept: no build needed (unless its images changed)
        self.gate.check()

    async def known_size(self, record: ObjectRecord) -> int | None:
        """The length of ``record``'s PDF if a valid one is kept (its images' facts unread)."""
        if self.store is None:
            return None
        kept = await self.store.find(record_key(record, self.settings.pdf_page_size))
        return None if kept is None else kept.size

    async def make(self, plan: PdfPlan) -> PdfFile:
        """The PDF of ``plan``: kept, or built (sharing a build under way). Cancelling the call
        (the client left) stops the build once no other request waits for it."""
        if self.store is not None and plan.digest is not None:
            kept = await self.store.find(plan.key, plan.digest, claim=True)
            if self.metrics is not None:
                self.metrics.cache_lookup("pdf", kept is not None)
            if kept is not None:
                return PdfFile(kept.path, kept.size, kept=True)
        ident = (plan.key, plan.digest or secrets.token_hex(8))  # an unkept one is not shared
        return await self._flights.join(ident, partial(self._build, plan))

    async def _build(self, plan: PdfPlan) -> PdfFile:
        outcome = "failed"
        try:
            with in_lane(Lane.PDFS):
                async with self.gate.held():
                    built = await self._built(plan)
            outcome = "built"
            return built
        except QueueFull:
            outcome = "busy"
            raise
        except asyncio.CancelledError:
            outcome = "abandoned"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.pdf_build(outcome)

    async def _built(self, plan: PdfPlan) -> PdfFile:
        store = self.store if plan.digest is not None else None
        token = None
        if store is not None:  # its markers, before any page is rendered
            token = await owned(store.begin(plan.key, plan.sources), partial(_forsake, store, plan))
        folder = store.folder if store is not None and token is not None else None
        kept = False
        try:
            path, out = await owned(asyncio.to_thread(_new_file, folder), _abandon)
            try:
                size = await self._write(plan, out)
                if (
                    store is not None
                    and token is not None
                    and plan.digest is not None
                    and await self._unpurged(plan)
                ):
                    found = await store.keep(plan.key, token, path, plan.sources, plan.digest)
                    kept = found is not None
            except BaseException:
                _remove(path)
                raise
        finally:
            if store is not None and token is not None and not kept:
                store.forsake(plan.key, token, plan.sources)  # failed, abandoned, not kept
        return PdfFile(path, size, kept)  # the build's own file: see _discard

    async def _unpurged(self, plan: PdfPlan) -> bool:
        """Whether no purge of the PDF's images has come since its facts were first read: this
        process may have made it from what it held in memory, and it hears of a purge made by
        another process only about a second later, unless it reads the journals now. (A purge
        after the markers were written removes them: then :meth:`DocumentStore.keep` refuses.)"""
        caches = self.images.caches
        await caches.hear()
        return all(caches.generation(source) == then for source, then in plan.heard.generations)

    async def _write(self, plan: PdfPlan, out: BinaryIO) -> int:
        """Render the pages one at a time into a PDF written to ``out``, which is closed here;
        its size. The writer's jobs and the closing take turns (a lock): a job still running
        in its thread when the build stops (a thread cannot be stopped) writes to an open file,
        closed after it."""
        images, metrics = self.images, self.metrics
        turn = threading.Lock()
        closed = False
        try:
            writer = await images.workers.run(
                _in_turn, turn, partial(PdfWriter, out, title=plan.title)
            )
            for page in plan.pages:
                rendered = await images.render(page, accept=_is_page)  # a cached one too
                pw, ph, components = jpeg_size(rendered.body)
                await images.workers.run(
                    _in_turn, turn, partial(writer.add_jpeg, rendered.body, pw, ph, components)
                )
                if metrics is not None:
                    metrics.pdf_page()
            size: int = await images.workers.run(_in_turn, turn, partial(_finish, writer, out))
            closed = True
        finally:
            if not closed:  # (not awaited: a job may still hold the turn)
                closing = asyncio.get_running_loop().run_in_executor(
                    None, _in_turn, turn, out.close
                )
                closing.add_done_callback(_quiet)
        return size


def _in_turn(turn: threading.Lock, call: Callable[[], T]) -> T:
    with turn:
        return call()


def _finish(writer: PdfWriter, out: BinaryIO) -> int:
    size = writer.close()
    out.close()
    return size


def _quiet(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # a failure to close a file of a build that failed: nothing to add


def _new_file(folder: DocumentFolder | None) -> tuple[Path, BinaryIO]:
    """A new file for a build, open for writing: in the documents' folder when it may be kept
    (so keeping it is a link), else a temporary file."""
    if folder is not None:
        with contextlib.suppress(OSError):  # (the disk failing: a temporary file instead)
            path = folder.scratch()
            return path, path.open("xb")
    fd, name = tempfile.mkstemp(".pdf", "iiif-shim-")
    return Path(name), os.fdopen(fd, "wb")


def _forsake(store: DocumentStore, plan: PdfPlan, token: str | None) -> None:
    """The markers of a build stopped before it had its token."""
    if token is not None:
        store.forsake(plan.key, token, plan.sources)


def _abandon(made: tuple[Path, BinaryIO]) -> None:
    """A build's new file, made for a build stopped before it had it."""
    made[1].close()
    _remove(made[0])


def _is_page(rendered: Rendered) -> bool:
    """Whether the PDF writer can take this image as a page (a JPEG whose frame it reads)."""
    try:
        jpeg_size(rendered.body)
    except ValueError:
        return False
    return True


def _claimed(built: PdfFile) -> PdfFile:
    """What one waiter serves: a link of its own to the build's file (each waiter removes its
    link once sent; the build's own name goes with the last waiter, a kept copy stays)."""
    link = built.path.with_name(f"{built.path.stem}-{secrets.token_hex(4)}.pdf")
    os.link(built.path, link)
    return PdfFile(link, built.size, built.kept)


def _discard(built: PdfFile) -> None:
    """A build's own file, once every waiter has its link."""
    _remove(built.path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
