"""The HTTP side every network backend shares: settings, one client per backend, fault handling.

Each backend that talks to a legacy server has its own :class:`Upstream` (so its limits and its
circuit are its own) and gets answers through :meth:`Upstream.get`, which:

- refuses at once (503 with ``Retry-After``) while the backend's circuit is open (``breaker.py``);
- admits the request to the connection pool: one image holds at most its share of the
  connections (``max_connections_per_image``), so one stalled image cannot starve the others;
  a backend's requests for facts (info.json, ``.dzi``, a header, or a whole master read for
  its header) together hold at most ``max_connections`` less a reserve (:func:`image_reserve`),
  so metadata that stalls, for however many identifiers, always leaves connections for the
  images themselves; and those asked for documents (the request's lane, ``base/lanes.py``:
  manifests, collections, PDFs) hold at most half of that (:func:`documents_share`), so cold
  documents of many canvases leave connections for the facts of info.json and of images;
  waiting for a free connection has its own bound (``pool_timeout``) and its own 503;
- asks with ``Accept-Encoding: identity`` and the request id, follows redirects only within the
  origin and folder of the backend's URL templates (``redirects: same_origin``) or not at all;
  sends the backend's HTTP Basic credentials (``username``, ``password``) with each request to
  the origin of one of those templates (compared as ``urltemplate.origin_of`` does: a default
  port written or not, the host's case and IDNA alike), never to another; the header's value is
  a secret too (``base/redaction.py``);
- reads at most ``max_bytes`` of an image and ``max_metadata_bytes`` of metadata (more: 502),
  each body held once: a small one in memory (its pieces joined once: twice its size at the
  peak), an image body of more than ``SPILL_AT`` (:meth:`Upstream.download`) written as it
  arrives to an unnamed temporary file in the backend's spill folder that the image engine
  reads (``spill.py``), so a large master costs disk, not memory (unless that folder is in
  memory, ``spills_in_memory``); what a whole image answer holds in memory is told as it
  grows to whoever reserves it (``hold``: from its declared length once the headers are in,
  then as its bytes arrive or are written to a folder in memory; :func:`held_bytes` is what
  an answer of a size expected beforehand holds);
- decides by what a body is whether it may come compressed: an image (a master, a tile, the
  first bytes of a master, :meth:`Upstream.download`, ``image=True``) that comes encoded (it
  was asked for ``identity``) is a 502, never inflated; anything else (metadata, a catalogue)
  that comes gzip/deflate-encoded is inflated a step at a time (the loop free in between), never
  past its cap, from at most its cap of compressed bytes, and bytes after the compressed
  stream are a 502;
- retries metadata requests (idempotent, small) after a refused or reset connection or a
  502/503/504, with jittered backoff, within the same deadline;
- answers, whatever the fault, within ``timeout`` (504 past it), naming the backend and never
  its URL: 404/410 -> 404; refused, reset, other 4xx/5xx, truncated, oversize, not what was
  promised -> 502.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import os
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from iiif_shim.base import redaction
from iiif_shim.base.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    ConnectionDropped,
    ConnectTimeout,
    MalformedAnswer,
    NotAnImage,
    NotFound,
    OversizeAnswer,
    RedirectRefused,
    ShimError,
    TruncatedBody,
    Unreachable,
    UpstreamClientError,
    UpstreamServerError,
)
from iiif_shim.base.lanes import Lane, lane
from iiif_shim.telemetry import tracing
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream import spill
from iiif_shim.upstream.breaker import CircuitBreaker
from iiif_shim.upstream.settings import UpstreamSettings
from iiif_shim.upstream.spill import Spill
from iiif_shim.upstream.urltemplate import UrlTemplate, origin_of

log = logging.getLogger("iiif_shim")

_CHUNK = 64 * 1024
_INFLATE_STEP = 1024 * 1024
# An image body larger than this is written to a temporary file as it arrives (Spill); what is
# held in memory per request is at most this much (metadata: at most max_metadata_bytes).
SPILL_AT = 4 * 1024 * 1024
_WRITE_BLOCK = 1024 * 1024  # bytes gathered before one write to a spill file (off the loop)
_MAGIC_BYTES = 16  # the first bytes that tell whether a body is an image's
# Told, as it grows, the most memory a whole image answer being read holds (Upstream.download)
Hold = Callable[[int], Awaitable[None]]
_TYPE_RE = re.compile(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,40}")
_MAX_REDIRECTS = 3

# Leading bytes of the image formats legacy servers send.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",  # JPEG 2000 (JP2)
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"BM",
)


def looks_like_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(magic) for magic in _IMAGE_MAGIC)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    complete: bool  # the whole body was read (not cut at a limit)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def version(self) -> str | None:
        """What changes when the resource changes: its ETag, else its Last-Modified."""
        return version_of(self.headers)

    @property
    def last_modified(self) -> float | None:
        return modified_of(self.headers)


def version_of(headers: Mapping[str, str]) -> str | None:
    """The version an answer's headers give: its ETag, else its Last-Modified."""
    return headers.get("ETag") or headers.get("Last-Modified")


def modified_of(headers: Mapping[str, str]) -> float | None:
    """An answer's Last-Modified as a timestamp (``None``: none, or not a date)."""
    value = headers.get("Last-Modified")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Body:
    """An image body that passes through as it arrives: ``head`` (its first bytes, already
    read and checked), ``rest`` (the remaining chunks), the length the server declared and
    the version it gave (its ETag, else its Last-Modified, as :attr:`Answer.version`)."""

    head: bytes
    rest: AsyncIterator[bytes]
    length: int | None
    version: str | None = None


@dataclass(frozen=True)
class Download:
    """An image answer read whole, held once: in memory (``data``) when it is small, else in a
    temporary file (``spill``); ``size`` bytes either way, the first ones checked to be an
    image's; the version and Last-Modified its server gave."""

    size: int
    data: bytes | None = None
    spill: Spill | None = None
    version: str | None = None
    last_modified: float | None = None


def held_bytes(settings: UpstreamSettings, expected: int) -> int:
    """The most memory a whole image answer (:meth:`Upstream.download`) of about ``expected``
    bytes holds in memory while it is read: twice its size (its pieces, then joined), at most
    twice ``SPILL_AT`` (a larger one is written a block at a time). What is written to a spill
    folder in memory is not in it: that is held as it is written (``hold``)."""
    return 2 * min(expected, settings.max_bytes, SPILL_AT)


def _holds(size: int, spills_in_memory: bool) -> int:
    """The most memory a whole image answer of ``size`` bytes, as declared, holds while it is
    read: its pieces, then joined, when it is kept in memory; a block of pieces at a time when
    it is written to a spill file, and all of it too when that file is in memory."""
    if size <= SPILL_AT:
        return 2 * size
    return _WRITE_BLOCK + _CHUNK + (size if spills_in_memory else 0)


def image_reserve(max_connections: int) -> int:
    """Connections of a backend's pool that its metadata requests cannot take: a quarter,
    at least one (none when the pool has a single connection)."""
    return max(1, max_connections // 4) if max_connections > 1 else 0


def documents_share(max_connections: int) -> int:
    """Connections of a backend's pool that the facts asked for documents may hold together:
    half of what metadata may hold, at least one."""
    return max(1, (max_connections - image_reserve(max_connections)) // 2)


class _Held:
    """What one whole answer being read holds, told to ``hold`` only when it grows; the time
    ``hold`` waits (for memory) is added to the request's ``limit``: it is not the backend's."""

    def __init__(self, hold: Hold | None, limit: asyncio.Timeout) -> None:
        self._hold = hold
        self._limit = limit
        self.nbytes = 0

    async def grow(self, nbytes: int) -> None:
        if self._hold is None or nbytes <= self.nbytes:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._hold(nbytes)
        self.nbytes = nbytes
        when = self._limit.when()
        if when is not None:
            self._limit.reschedule(when + loop.time() - started)


@dataclass
class _Call:
    """One call in :meth:`Upstream._accounted`: whether the backend has answered yet."""

    answered: bool = False


class Upstream:
    """One backend's HTTP client. ``role`` is ``backend`` (it fetches images: a reserve of
    its connections is kept for them) or ``source`` (an object source's catalogue: every
    request is metadata, nothing is reserved)."""

    def __init__(
        self,
        backend: str,
        settings: UpstreamSettings,
        scopes: Sequence[UrlTemplate] = (),
        metrics: Metrics | None = None,
        role: str = "backend",
        spill_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.spill_dir = spill_dir  # where large image answers are written (None: TMPDIR)
        # whether what is written there is memory (tmpfs): then it is held as it is written
        self.spills_in_memory = role == "backend" and spill.in_memory(spill.folder(spill_dir))
        self.who = f"{role} '{backend}'"  # how error messages name it
        self.settings = settings
        self.scopes = tuple(scopes)  # where redirects may lead
        # HTTP Basic credentials, sent only to the origins of the configured URLs
        self._origins = frozenset(o for t in self.scopes if (o := t.origin_key) is not None)
        self._authorization: str | None = None
        if settings.username is not None or settings.password is not None:
            pair = f"{settings.username or ''}:{settings.password or ''}"
            encoded = base64.b64encode(pair.encode()).decode()
            redaction.remember(encoded)  # as the header carries it: never printed either
            self._authorization = "Basic " + encoded
        self.metrics = metrics
        self.breaker = CircuitBreaker(self.who, settings.breaker_failures, settings.breaker_reset)
        self._session: aiohttp.ClientSession | None = None
        self._pool = asyncio.Semaphore(settings.max_connections)
        self._shares: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self.reserve = image_reserve(settings.max_connections) if role == "backend" else 0
        self._metadata = asyncio.Semaphore(settings.max_connections - self.reserve)
        # facts asked for documents (an object source's requests all are: no share)
        self.documents = documents_share(settings.max_connections) if role == "backend" else 0
        self._documents = asyncio.Semaphore(self.documents) if self.documents else None
        self.in_use = 0
        self.waiting = 0  # requests waiting for a connection
        self.requests = 0  # what this backend has asked and received (for /health and probe)
        self.bytes_received = 0

    async def start(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.max_connections),
            timeout=aiohttp.ClientTimeout(total=None, connect=s.connect_timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # a backend's cookies are neither kept nor sent
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(
        self,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        limit: int | None = None,
        cap: int | None = None,
        image: bool = False,
        encoded: bool | None = None,
        metadata: bool = False,
        facts: bool | None = None,
        image_id: str = "",
        what: str = "",
        circuit: bool = True,
    ) -> Answer:
        """GET ``url`` for the image ``image_id`` (its share of the pool). The body is capped at
        ``cap``, else ``max_metadata_bytes`` with ``metadata`` (small: then also retried on
        transient faults), else ``max_bytes``; more is a 502, unless ``limit`` asks for only
        the first bytes. ``facts``: whether it takes its connection as a request for facts
        (within what metadata may hold; by default, as ``metadata`` says): a whole master read
        for its header is one. With ``image``, the body must be an image. ``encoded``: whether
        a gzip/deflate body is inflated (up to the cap) rather than refused; by default, unless
        it is an ``image`` (an image's bytes, a part of a master, are never inflated).
        ``circuit=False`` (health checks) neither waits for nor counts toward the circuit."""
        inflate = not image if encoded is None else encoded
        deadline = asyncio.get_running_loop().time() + self.settings.timeout
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        async with self._accounted(circuit) as call:
            async with self._slot(image_id, deadline, metadata if facts is None else facts):
                answer = await self._attempts(
                    target,
                    headers,
                    limit or cap,
                    limit is not None,
                    metadata,
                    inflate,
                    deadline,
                    what,
                )
            call.answered = True
            if image and not looks_like_image(answer.body):
                raise self._not_an_image(answer.content_type, what)
        self.bytes_received += len(answer.body)
        return answer

    @asynccontextmanager
    async def _accounted(self, circuit: bool = True) -> AsyncIterator[_Call]:
        """One call to the backend, in its circuit and its metrics: passing the circuit first
        (``circuit=False``: health checks neither wait for it nor count), a timeout turned into
        a 504 naming the backend, and each failure counted against the circuit as its class
        says (``server_failed``), once the backend has answered (``answered``) as a fault of
        the answer only."""
        started = time.perf_counter()
        outcome = "ok"
        trial = self.breaker.admit() if circuit else False
        call = _Call()
        verdict: bool | None = None
        try:
            yield call
            verdict = True
        except TimeoutError:
            outcome, verdict = "timeout", False
            raise BackendTimeout(
                f"{self.who} did not answer within {self.settings.timeout:g}s"
            ) from None
        except ShimError as exc:
            outcome = exc.kind
            verdict = True if call.answered else _answered(exc)
            raise
        finally:
            if circuit:
                self.breaker.record(trial, verdict)
            if self.metrics is not None:
                self.metrics.backend_call(self.backend, outcome, time.perf_counter() - started)

    @asynccontextmanager
    async def stream(
        self, url: str | URL, *, image_id: str = "", what: str = "", head: int = _CHUNK
    ) -> AsyncIterator[Body]:
        """An image that passes through untouched, as it arrives: its first ``head`` bytes are
        read (and must look like an image) within ``timeout`` before the block runs; the rest
        comes from :attr:`Body.rest`, never all in memory, at most ``max_bytes`` in all, each
        chunk within ``timeout`` of the one before (how fast the client takes them is not the
        backend's doing: it is neither timed here nor counted in the circuit). The connection
        and the pool slot are held until the block ends. Faults before the block are raised as
        from :meth:`get`; later ones from the iteration."""
        deadline = asyncio.get_running_loop().time() + self.settings.timeout
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        async with AsyncExitStack() as held:
            async with self._accounted() as call, asyncio.timeout_at(deadline):
                await held.enter_async_context(self._slot(image_id, deadline))
                resp = await held.enter_async_context(self._opened(target, None, what))
                first = await self._head(resp, head, what)
                call.answered = True
            cap = self.settings.max_bytes - len(first)
            yield Body(first, self._rest(resp, cap), resp.content_length, version_of(resp.headers))

    async def _head(self, resp: aiohttp.ClientResponse, head: int, what: str) -> bytes:
        """The first ``head`` bytes of an image answer, checked."""
        cap = self.settings.max_bytes
        if (resp.content_length or 0) > cap:
            raise _too_large(self.who, cap, False)
        _identity(resp, self.who)
        try:
            first = await resp.content.readexactly(min(head, cap))
        except asyncio.IncompleteReadError as short:
            first = short.partial
        except aiohttp.ClientError as exc:
            raise self._failure(exc) from None
        if not looks_like_image(first):
            raise self._not_an_image(resp.content_type, what)
        self.bytes_received += len(first)
        return first

    def _not_an_image(self, declared: str, what: str) -> NotAnImage:
        """The 502 for a body that is not an image's: what its server declared it to be (a
        plain media type, else a neutral word)."""
        kind = declared if _TYPE_RE.fullmatch(declared) else "something else"
        return NotAnImage(
            f"{self.who} sent {kind}, not an image" + (f" for {what}" if what else "")
        )

    async def _rest(self, resp: aiohttp.ClientResponse, cap: int) -> AsyncIterator[bytes]:
        """The body after its head, a chunk at a time, at most ``cap`` bytes (more: 502), each
        within ``timeout`` (a stalled backend: 504)."""
        timeout = self.settings.timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await resp.content.read(_CHUNK)
                except TimeoutError:
                    raise BackendTimeout(
                        f"{self.who} stalled for {timeout:g}s in the middle of a body"
                    ) from None
                if not chunk:
                    return
                cap -= len(chunk)
                if cap < 0:
                    raise _too_large(self.who, self.settings.max_bytes, False)
                self.bytes_received += len(chunk)
                yield chunk
        except aiohttp.ClientError as exc:
            failure = self._failure(exc)
            raise failure from None

    async def download(
        self,
        url: str | URL,
        *,
        image_id: str = "",
        what: str = "",
        facts: bool = False,
        hold: Hold | None = None,
    ) -> Download:
        """An image answer read whole, at most ``max_bytes`` (more: 502), within ``timeout``,
        never retried; its first bytes must be an image's (read until there are enough of them,
        :meth:`_head`), and it must not come encoded. A body of more than ``SPILL_AT`` bytes is
        written to a :class:`~iiif_shim.upstream.spill.Spill` as it arrives (the writes on the
        spill threads), never held in memory. ``facts``: as in :meth:`get` (a whole master
        read for its header). ``hold`` is told the most memory the answer holds, before it
        holds it when its length is declared, else as its bytes arrive (and are written to a
        spill folder in memory); what it waits for (memory) is not counted in ``timeout``."""
        deadline = asyncio.get_running_loop().time() + self.settings.timeout
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        async with (
            self._accounted() as call,
            asyncio.timeout_at(deadline) as limit,
            self._slot(image_id, deadline, facts),
            self._opened(target, None, what) as resp,
        ):
            held = _Held(hold, limit)
            declared = min(resp.content_length or 0, self.settings.max_bytes)
            await held.grow(_holds(declared, self.spills_in_memory))
            first = await self._head(resp, _CHUNK, what)
            got = await self._whole(resp, first, held)
            call.answered = True
        return got

    async def _whole(self, resp: aiohttp.ClientResponse, first: bytes, held: _Held) -> Download:
        """The body of ``resp`` after its checked ``first`` bytes, held once (:meth:`download`),
        what it holds told to ``held`` as it grows."""
        declared = resp.content_length or 0
        pieces = [first]
        gathered = size = len(first)  # bytes in pieces; bytes in all
        into: Spill | None = None
        try:
            await held.grow(gathered)
            async for chunk in self._rest(resp, self.settings.max_bytes - len(first)):
                size += len(chunk)
                pieces.append(chunk)
                gathered += len(chunk)
                # in memory: the pieces, and on a spill folder in memory what was written
                await held.grow(size if into is not None and self.spills_in_memory else gathered)
                if into is None and max(size, declared) > SPILL_AT:
                    into = await spill.run(Spill, self.spill_dir)
                if into is not None and gathered >= _WRITE_BLOCK:
                    await self._spilled(into.write, pieces)
                    pieces, gathered = [], 0
            if into is not None:
                await self._spilled(into.finish, pieces)
            else:
                await held.grow(2 * size)  # its pieces, then joined
        except BaseException:
            if into is not None:
                into.close()
            raise
        version, modified = version_of(resp.headers), modified_of(resp.headers)
        if into is not None:
            return Download(size, spill=into, version=version, last_modified=modified)
        data = b"".join(pieces)
        del pieces
        return Download(size, data=data, version=version, last_modified=modified)

    async def _spilled(self, write: Callable[[list[bytes]], None], pieces: list[bytes]) -> None:
        """``write(pieces)`` on the spill threads; a disk that fails (full, gone) is a 503."""
        try:
            await spill.run(write, pieces)
        except OSError as exc:
            raise spill.no_room(exc, self.spill_dir) from None

    @asynccontextmanager
    async def _slot(
        self, image_id: str, deadline: float, facts: bool = False
    ) -> AsyncIterator[None]:
        """A connection of the pool, within this image's share (and, for ``facts``, within what
        metadata may hold, and for a document's, within the documents' share); 503 when none
        frees up."""
        loop = asyncio.get_running_loop()
        wait = min(self.settings.pool_timeout, max(0.0, deadline - loop.time()))
        share, users = self._shares.get(image_id) or (
            asyncio.Semaphore(self.settings.image_share),
            0,
        )
        self._shares[image_id] = (share, users + 1)
        # always in this order (documents' share, metadata lane, image share, pool): no two
        # requests can each hold what the other waits for
        gates = [share, self._pool]
        if facts:
            gates.insert(0, self._metadata)
            if self._documents is not None and lane.get() is not Lane.IMAGES:
                gates.insert(0, self._documents)
        held: list[asyncio.Semaphore] = []
        try:
            self.waiting += 1
            try:
                async with asyncio.timeout(wait):
                    for gate in gates:
                        await gate.acquire()
                        held.append(gate)
            except TimeoutError:
                held_back = f", {self.reserve} kept for images" if facts and self.reserve else ""
                if gates[0] is self._documents:
                    held_back += f", at most {self.documents} for documents"
                raise BackendBusy(
                    f"{self.who} is busy: no connection was free within "
                    f"{wait:g}s ({self.in_use} in use{held_back})",
                ) from None
            finally:
                self.waiting -= 1
                if len(held) < len(gates):  # not admitted: give back what it took
                    for gate in reversed(held):
                        gate.release()
            self.in_use += 1
            try:
                yield
            finally:
                self.in_use -= 1
                for gate in reversed(held):
                    gate.release()
        finally:
            share_now, users_now = self._shares[image_id]
            if users_now <= 1:
                del self._shares[image_id]
            else:
                self._shares[image_id] = (share_now, users_now - 1)

    async def _attempts(
        self,
        url: URL,
        headers: Mapping[str, str] | None,
        cap: int | None,
        partial: bool,
        metadata: bool,
        inflate: bool,
        deadline: float,
        what: str,
    ) -> Answer:
        cap = cap or (self.settings.max_metadata_bytes if metadata else self.settings.max_bytes)
        retries = self.settings.retries if metadata else 0
        loop = asyncio.get_running_loop()
        for attempt in range(retries + 1):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._once(url, headers, cap, partial, metadata, inflate, what)
            except ShimError as error:
                pause = 0.1 * (2**attempt) * random.uniform(0.5, 1.5)
                if not error.retryable or attempt == retries or loop.time() + pause >= deadline:
                    raise
                log.info("%s: %s; retrying", self.who, error.message)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _once(
        self,
        url: URL,
        headers: Mapping[str, str] | None,
        cap: int,
        partial: bool,
        metadata: bool,
        inflate: bool,
        what: str,
    ) -> Answer:
        async with self._opened(url, headers, what) as resp:
            if not partial and (resp.content_length or 0) > cap:
                raise _too_large(self.who, cap, metadata)
            try:
                body, complete = await _read(resp, cap, self.who, inflate)
            except aiohttp.ClientError as exc:
                raise self._failure(exc) from None
            if not complete and not partial:
                raise _too_large(self.who, cap, metadata)
            # headers.copy() keeps the lookups case-insensitive ("Etag" is "ETag")
            return Answer(resp.status, resp.headers.copy(), body, complete)

    @asynccontextmanager
    async def _opened(
        self, url: URL, headers: Mapping[str, str] | None, what: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to ``url`` once its status and headers are in, redirects followed by
        the policy; a status that is not a success is the shim's error for it."""
        if self._session is None:
            raise RuntimeError("backend not started")
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        if (rid := tracing.request_id.get()) is not None:
            sent[tracing.HEADER] = rid
        for _ in range(_MAX_REDIRECTS + 1):
            self.requests += 1  # every request sent, whatever comes back
            try:
                opening = self._session.get(url, headers=self._credited(url, sent),
                                            allow_redirects=False)  # fmt: skip
                resp = await opening.__aenter__()
            except aiohttp.ClientError as exc:
                raise self._failure(exc) from None
            try:
                if resp.status in (301, 302, 303, 307, 308):
                    url = self._redirect(url, resp.headers.get("Location", ""))
                    continue
                if resp.status in (404, 410):
                    raise NotFound("no such image" + (f" ({what})" if what else ""))
                if resp.status >= 500:
                    raise UpstreamServerError(
                        f"{self.who} answered HTTP {resp.status}"
                        + (f" for {what}" if what else ""),
                        resp.status,
                    )
                if resp.status >= 400 and resp.status != 416:
                    raise UpstreamClientError(
                        f"{self.who} answered HTTP {resp.status}" + (f" for {what}" if what else "")
                    )
                yield resp
                return
            finally:
                resp.release()
        raise RedirectRefused(f"{self.who} redirected too many times")

    def _credited(self, url: URL, sent: dict[str, str]) -> dict[str, str]:
        """The headers for ``url``: with the backend's credentials when it is on the origin of
        one of its configured URLs (a redirect elsewhere never gets them; a URL with its own
        ``user:password@`` sends those)."""
        if self._authorization is None or url.user is not None:
            return sent
        if origin_of(url) not in self._origins:
            return sent
        return {**sent, "Authorization": self._authorization}

    def _failure(self, exc: aiohttp.ClientError) -> ShimError:
        """The shim's error for a client-side failure."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            # the OS's own words for its error number: strerror may name the address
            number = exc.os_error.errno if exc.os_error else None
            reason = os.strerror(number) if number else "connection failed"
            return Unreachable(f"{self.who} is unreachable ({reason})")
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return ConnectTimeout(
                f"{self.who} did not accept a connection within {self.settings.connect_timeout:g}s"
            )
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            return ConnectionDropped(f"{self.who} closed the connection")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return TruncatedBody(f"{self.who} sent a broken or truncated body")
        if isinstance(exc, aiohttp.ClientResponseError):
            return MalformedAnswer(f"{self.who} sent a malformed answer", detail=str(exc))
        return BackendError(f"{self.who} failed", detail=type(exc).__name__)

    def _redirect(self, url: URL, location: str) -> URL:
        """Where a redirect leads, if the policy allows it (else a 502)."""
        if self.settings.redirects == "same_origin" and location:
            try:
                target = url.join(URL(location))
            except ValueError:
                target = None
            if target is not None and any(t.within(str(target)) for t in self.scopes):
                return target
        raise RedirectRefused(
            f"{self.who} redirected outside its configured URLs"
            if self.settings.redirects == "same_origin"
            else f"{self.who} redirected (redirects: none)",
        )


def _answered(error: ShimError) -> bool | None:
    """What ``error`` says of the server, for its circuit: it answered (True), it failed
    (False), or it was not asked (None)."""
    return None if error.server_failed is None else not error.server_failed


def _too_large(backend: str, cap: int, metadata: bool) -> BackendError:
    setting = "max_metadata_bytes" if metadata else "max_bytes"
    return OversizeAnswer(f"{backend}: the response is larger than {setting} ({cap})")


def _encoding(resp: aiohttp.ClientResponse) -> str:
    """How the body of ``resp`` is encoded (``identity`` when it is sent as it is)."""
    return resp.headers.get("Content-Encoding", "").strip().lower() or "identity"


def _identity(resp: aiohttp.ClientResponse, backend: str) -> None:
    """Refuse an image body that is not sent as it is: it was asked for ``identity``, and an
    image is never usefully compressed again, while a gzip bomb would be inflated."""
    encoding = _encoding(resp)
    if encoding != "identity":
        raise MalformedAnswer(
            f"{backend} sent an image encoded as {encoding[:20]!r} (asked for identity)"
        )


async def _read(
    resp: aiohttp.ClientResponse, cap: int, backend: str, inflate: bool
) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, held once (its pieces joined once, at the end);
    ``complete`` says whether that was all of it. With ``inflate``, a gzip/deflate body is
    decoded a step at a time (the loop free in between), never past the cap, from at most
    ``cap`` compressed bytes, and anything after the compressed stream is a 502; without, an
    encoded body is refused (:func:`_identity`)."""
    encoding = _encoding(resp)
    decoder: zlib._Decompress | None = None
    if encoding == "identity":
        pass
    elif not inflate:
        _identity(resp, backend)
    elif encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    else:
        raise MalformedAnswer(f"{backend} sent a body encoded as {encoding[:20]!r}")
    pieces: list[bytes] = []
    held = taken = 0  # bytes in pieces; compressed bytes read
    over = False  # more than the cap
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            if decoder is None:
                pieces.append(chunk[: cap - held])
                held += len(chunk)
                over = held > cap
            else:
                taken += len(chunk)
                over = taken > cap
                pending = chunk
                while pending and not over:
                    if decoder.eof:  # bytes after the compressed stream: not one body
                        raise MalformedAnswer(f"{backend} sent bytes after its compressed body")
                    piece = decoder.decompress(pending, min(_INFLATE_STEP, cap + 1 - held))
                    pieces.append(piece[: cap - held])
                    held += len(piece)
                    over = held > cap
                    pending = decoder.unconsumed_tail or decoder.unused_data
                    await asyncio.sleep(0)
            if over:
                break
    except zlib.error:
        raise MalformedAnswer(f"{backend} sent a corrupt compressed body") from None
    complete = not over and resp.content.at_eof()
    if decoder is not None and complete and not decoder.eof:  # the compressed stream was cut
        raise TruncatedBody(f"{backend} sent a truncated compressed body")
    body = b"".join(pieces)
    del pieces
    return body, complete
