"""The contract every backend keeps, and the base of the backends that speak HTTP.

A backend is narrow: it reports facts about a source (:meth:`Backend.facts`, whose ``native``
is of a type it declares in :attr:`Backend.natives`; :meth:`Backend.checked` is the one check
of them), delivers what the planner asks of it (:meth:`Backend.fetch`), says what it does
natively (:meth:`Backend.capabilities`), how it is (:meth:`Backend.health`) and what it can
list, and turns its own low-level failures into the shim's errors at its boundary. It never
decides what to do natively: ``core/planner.py`` does, from the capabilities. A backend is made
from its name and its typed settings alone (nothing is opened); :meth:`Backend.start` then gets
what the service lends it.

:class:`UpstreamBackend` is the skeleton every network backend shares: its URL templates (named,
parsed from its settings), one :class:`~iiif_shim.upstream.client.Upstream` client, and safe
expansion of a template for a target, and :meth:`UpstreamBackend.image`, the one way a whole
image answer becomes a delivery (held once: small in memory, large in a temporary file in its
spill folder: ``spill_dir``, else the disk cache's folder, else ``TMPDIR``), and what such an
answer is expected to hold in memory (:meth:`Backend.body_bytes`, which the service reserves
from the memory budget with the image's cost before it fetches). :class:`BodyShare` is that
share of a request's reservation, grown while an answer is read when it holds more (its
declared length, its bytes as they arrive, what is written to a spill folder in memory).
:class:`OpenFile` is a master a backend opened to be sent as it is (:meth:`Backend.open_master`;
only a backend that keeps masters as local files has one).
:class:`Listable` is what a backend that keeps its images
in folders offers besides (the ``folder`` object source lists through it, and finds each
image's sidecar files there: its OCR, by the same name with another extension).
"""

from __future__ import annotations

import enum
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from yarl import URL

from iiif_shim.backends.settings import BackendSettings, NetworkSettings
from iiif_shim.base.errors import (
    NotFound,
    ShimError,
    UnreadableMetadata,
    UpstreamClientError,
    unreachable,
)
from iiif_shim.cache.facade import Caches
from iiif_shim.imaging.budget import MemoryBudget, Reservation
from iiif_shim.imaging.engine import Record
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import Traits
from iiif_shim.model.facts import NativeFacts, SourceInfo, checked
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream import spill
from iiif_shim.upstream.breaker import State
from iiif_shim.upstream.client import Answer, Body, Download, Hold, Upstream, held_bytes
from iiif_shim.upstream.urltemplate import UnsafeValue, UrlTemplate

log = logging.getLogger("iiif_shim")

RunBlocking = Callable[..., Awaitable[Any]]
S = TypeVar("S", bound=BackendSettings)
N = TypeVar("N", bound=NetworkSettings)
T = TypeVar("T")
# what a parser of a hostile answer may raise; each is answered as a 502
PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError)


class Health(enum.StrEnum):
    """A backend's state, as Cantaloupe's GREEN/YELLOW/RED: it answers; it answers with errors
    or its circuit is half-open; it is unreachable, timing out, or its circuit is open."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class BackendContext:
    """What the service lends every backend when it starts: its thread pool, its caches (a
    backend that keeps what it fetched keeps it there, so purges reach it), its metrics and
    the memory budget (what a backend fetches outside an image request reserves from it)."""

    run_blocking: RunBlocking
    caches: Caches
    metrics: Metrics | None = None
    budget: MemoryBudget | None = None

    @property
    def record(self) -> Record | None:
        return self.metrics.pillow_step if self.metrics else None


@dataclass(frozen=True)
class OpenFile:
    """A master opened once to be sent as it is: the file (whoever opened it closes it), where
    it was found, its version as the open file has it (what its facts' version must be), how
    it stood when opened (:meth:`changed`) and its header's traits."""

    file: BinaryIO
    path: str
    version: str
    stat: os.stat_result
    traits: Traits

    @property
    def size(self) -> int:
        return self.stat.st_size

    def changed(self) -> bool:
        """Whether the file was written since it was opened, or another file put where it was
        (its size, modification time or inode differ, by ``fstat`` and by the path): what was
        sent of it may then be neither version. Blocking."""
        was = self.stat
        try:
            now, there = os.fstat(self.file.fileno()), os.stat(self.path)
        except OSError:
            return True
        return any(
            (s.st_ino, s.st_size, s.st_mtime_ns) != (was.st_ino, was.st_size, was.st_mtime_ns)
            for s in (now, there)
        )


class Backend(ABC, Generic[S]):
    """Base class of backends; one instance per entry under ``backends:`` in the config."""

    settings_class: ClassVar[type[BackendSettings]]
    native_note: ClassVar[str] = ""  # says what is native when ``capabilities`` varies by source
    # the types of ``SourceInfo.native`` this backend reports (``type(None)``: none); facts of
    # another type (left in a shared cache by a backend of another type) are not its facts
    natives: ClassVar[tuple[type[Any], ...]] = (type(None),)

    def __init__(self, name: str, settings: S) -> None:
        self.name = name
        self.settings = settings
        self._context: BackendContext | None = None

    @property
    def type_name(self) -> str:
        return self.settings.type_name

    @property
    def context(self) -> BackendContext:
        if self._context is None:
            raise RuntimeError(f"backend {self.name!r} is not started")
        return self._context

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        """What this backend does natively for a source whose native facts are ``native``
        (``None``: what its settings alone promise, for summaries). By default only the whole
        source image."""
        return Capabilities()

    def checked(self, info: SourceInfo) -> SourceInfo:
        """``info`` if this backend could have reported it (``model.facts.checked``, with the
        native types it reports), else a 502 naming it: the one check of its facts, whether
        they come from it or from a cache."""
        return checked(info, self.name, self.natives)

    async def start(self, context: BackendContext) -> None:
        """Take what the service lends and open connections; called once before any request."""
        self._context = context

    async def close(self) -> None:
        """Release connections; called once when the service stops."""

    @abstractmethod
    async def facts(self, target: Target) -> SourceInfo:
        """Width, height and the rest, for ``target``; raise NotFound when it does not exist."""

    @abstractmethod
    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        """Deliver ``op`` for ``target``."""

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        """``op``'s answer as it arrives, for a request the shim passes through untouched;
        ``None`` when this backend only delivers through :meth:`fetch` (the default)."""
        return None

    def body_bytes(self, op: NativeOp, info: SourceInfo) -> int:
        """The memory what one :meth:`fetch` of ``op`` receives is expected to hold before it
        is decoded (a network backend's answer, while it is read): the service reserves it with
        the image's own cost, and grows it when the answer holds more (:class:`BodyShare`).
        None by default (a local file is read by the engine)."""
        return 0

    async def open_master(self, target: Target) -> OpenFile | None:
        """The master of ``target`` opened to be sent as it is, with its version (the caller
        checks it against the facts, and closes it); ``None`` when this backend keeps no local
        file (the default) or the file cannot be opened and read (the usual way then finds
        out what is wrong)."""
        return None

    async def health(self, probe: Target | None) -> tuple[Health, str | None]:
        """This backend's state now, and why when it is not ``ok``; ``probe`` is where its
        settings' ``probe_id`` routes (its facts are asked for), if it has one."""
        return Health.OK, None

    @property
    def client(self) -> Upstream | None:
        """The HTTP client of a backend that talks to a server (its circuit, its traffic)."""
        return None

    def traffic(self) -> dict[str, int]:
        """Requests made and bytes received so far (network backends)."""
        client = self.client
        return {"requests": client.requests, "bytes": client.bytes_received} if client else {}

    async def identifiers(self, limit: int) -> list[str]:
        """Some native identifiers this backend can serve (for the landing page), if it can list."""
        return []


@dataclass(frozen=True)
class Listing:
    """What one folder of a backend holds: its sub-folders and the images in it (by their name
    without extension), each in natural order (``p2`` before ``p10``), hidden ones left out;
    and each image's ``sidecars``: the other files of the folder with the same name and
    another extension (full names, sorted; ``p1`` -> ``("p1.txt", "p1.xml")``), for images
    that have any. What a sidecar is for is its reader's business (the ``folder`` source takes
    OCR from them)."""

    folders: tuple[str, ...]
    images: tuple[str, ...]
    sidecars: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@runtime_checkable
class Listable(Protocol):
    """A backend that keeps its images in folders, and can say what a folder holds."""

    async def listing(self, folder: str) -> Listing | None:
        """What ``folder`` (relative to the backend's root, ``""`` the root itself) holds;
        ``None`` when there is no such folder."""
        ...

    async def read(self, path: str, limit: int) -> bytes | None:
        """The first ``limit + 1`` bytes of the file ``path`` (relative to the root), ``None``
        when there is no such file."""
        ...

    async def stamp(self, path: str) -> str | None:
        """What changes whenever the file ``path`` (relative to the root) is written (its size
        and modification time), without reading it; ``None`` when there is no such file."""
        ...


class UpstreamBackend(Backend[N]):
    """A backend that talks HTTP to one legacy server, with URLs made from its templates."""

    upstream: Upstream
    urls: Mapping[str, UrlTemplate]

    async def start(self, context: BackendContext) -> None:
        await super().start(context)
        self.urls = self.settings.templates()
        scopes = [t for t in self.urls.values() if t.origin is not None]
        where = spill_folder(self.settings.spill_dir, context.caches.settings.disk)
        self.upstream = Upstream(self.name, self.settings, scopes, context.metrics, spill_dir=where)
        if self.upstream.spills_in_memory:
            log.warning(
                "backend %r: its spill folder %s is in memory (tmpfs): large answers written "
                "there are counted against the memory budget as they are written; set "
                "spill_dir to a folder on disk",
                self.name,
                spill.folder(where),
            )
        await self.upstream.start()

    def body_bytes(self, op: NativeOp, info: SourceInfo) -> int:
        """What an answer the size of ``op``'s pixels holds in memory (:func:`expected_bytes`):
        a tile's few hundred KB, at most 8 MiB for a master."""
        return held_bytes(self.settings, expected_bytes(op))

    async def close(self) -> None:
        await self.upstream.close()

    def url(self, name: str, values: Mapping[str, str]) -> str:
        """Template ``name`` expanded with ``values``, each encoded for its place and checked
        not to leave it (``upstream/urltemplate.py``); an unsafe value is answered as an unknown
        image."""
        try:
            return self.urls[name].expand(values)
        except UnsafeValue as exc:
            log.info("backend %r: refused an identifier (%s)", self.name, exc)
            raise NotFound("no such image") from None

    async def metadata(
        self,
        url: str,
        parse: Callable[[Answer], T],
        *,
        what: str,
        target: Target,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[T, Answer]:
        """Fetch a metadata answer (small, retried on transient faults) and parse it in the
        thread pool; whatever the parser trips on is a 502 naming the backend."""
        answer = await self.upstream.get(
            url, metadata=True, image_id=target.native_id, what=what, headers=headers
        )
        try:
            parsed: T = await self.context.run_blocking(parse, answer)
        except PARSE_ERRORS as exc:
            raise UnreadableMetadata(
                f"backend '{self.name}' sent {what} it cannot read",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
        return parsed, answer

    async def image(
        self, url: str | URL, target: Target, *, what: str = "", facts: bool = False
    ) -> Fetched:
        """The image at ``url``, read whole and held once (``Upstream.download``): its bytes
        when it is small, else the temporary file it was written to, kept while the delivery
        (or any copy of it) lives."""
        share = answers.get()
        got = await self.upstream.download(
            url,
            image_id=target.native_id,
            what=what,
            facts=facts,
            hold=share.hold() if share is not None else None,
        )
        return self.delivery(got)

    def delivery(self, got: Download) -> Fetched:
        """What the engine reads of a whole answer: its bytes, or the temporary file holding
        them (kept while the delivery, or any copy of it, lives)."""
        described = f"backend '{self.name}'"
        if got.spill is None:
            return Fetched(data=got.data, described=described)
        return Fetched(path=got.spill.path, described=described, keep=got.spill)

    def root(self) -> str:
        """The server's root URL (for health checks without a ``probe_id``)."""
        origin = next(t.origin for t in self.urls.values() if t.origin is not None)
        return origin + "/"

    @property
    def client(self) -> Upstream | None:
        return self.upstream

    async def health(self, probe: Target | None) -> tuple[Health, str | None]:
        """Down while the circuit is open; otherwise the facts of ``probe`` are asked for, or
        the server's root (any answer below 500 counts: a root need not be a page)."""
        circuit = self.upstream.breaker.state
        if circuit is State.OPEN:
            return Health.DOWN, "its circuit is open after repeated failures"
        try:
            if probe is not None:
                self.checked(await self.facts(probe))
            else:
                await self.upstream.get(
                    self.root(), limit=1024, what="a health check", circuit=False
                )
        except NotFound:
            if probe is not None:
                return Health.DEGRADED, "its probe_id is not found"
        except ShimError as exc:
            if unreachable(exc):
                return Health.DOWN, exc.public_text()
            if isinstance(exc, UpstreamClientError) and probe is None:
                return Health.OK, None  # the root of a server need not be a page
            return Health.DEGRADED, exc.public_text()
        if circuit is State.HALF_OPEN:
            return Health.DEGRADED, "its circuit is half-open"
        return Health.OK, None


_ANSWER_SLACK = 64 * 1024  # headers, tables and poor compression, past an answer's raw pixels


def expected_bytes(op: NativeOp) -> int:
    """The bytes an answer to ``op`` is expected to take at most: its pixels as 8-bit RGBA,
    uncompressed, and a little more (an answer that proves larger grows its share)."""
    width, height = op.delivered_size()
    return width * height * 4 + _ANSWER_SLACK


class BodyShare:
    """The memory one request set aside for the upstream answers it reads: ``credit`` bytes
    of ``reservation`` (``Backend.body_bytes``, reserved with its pixels; ``None``: nothing
    reserved yet), grown when an answer holds more. Each growth is a reservation of its own,
    waiting its turn like any other (a 503 past ``memory_wait``, a 501 past the budget),
    folded into the request's reservation so that it is released with it, by its last holder
    (a decode that outlives its request keeps it counted)."""

    def __init__(
        self, budget: MemoryBudget, reservation: Reservation | None = None, credit: int = 0
    ) -> None:
        self.budget = budget
        self.reservation = reservation
        self.credit = credit

    def hold(self) -> Hold:
        """What one answer read tells as it grows (``Upstream.download``): the first answer
        is credited what was set aside beforehand; past it, the rest is reserved."""
        held, self.credit = self.credit, 0

        async def grow(nbytes: int) -> None:
            nonlocal held
            if nbytes <= held:
                return
            extra = await self.budget.reserve(nbytes - held)
            held = nbytes
            if self.reservation is None:
                self.reservation = extra
            else:
                self.reservation.nbytes += extra.nbytes  # given back with it

        return grow

    def release(self) -> None:
        """Give back what a share of its own reserved (one that was not given a reservation)."""
        if self.reservation is not None:
            self.reservation.release()
            self.reservation = None


# The share of the request being served (set by the service around what it fetches).
answers: ContextVar[BodyShare | None] = ContextVar("answers", default=None)


def spill_folder(configured: Path | None, disk_cache: Path | None) -> Path | None:
    """Where a backend's large answers are written: its ``spill_dir``, else the disk cache's
    folder (on disk, with room, by its nature), else ``None`` (``TMPDIR``)."""
    return configured if configured is not None else disk_cache
