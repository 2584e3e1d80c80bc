"""Orchestration of a request, with no aiohttp types in it.

``identifier -> route -> source facts (cached, single-flight, checked) -> resolve -> plan ->
result cache -> backend fetch -> Pillow in the pool -> Rendered``. Image requests are prepared
first (everything up to the plan, which yields the cache key and the ETag) so the HTTP layer can
answer a conditional request with 304 before any pixel is touched. An answer that passes through
untouched (a large one the backend made, or the master itself: ``passthrough.py``) is opened by
:meth:`ImageService.stream` and copied or sent by the HTTP layer, never buffered or cached. Whether
a request is an original is decided once, when it is planned (:attr:`Prepared.original`); the
master opened for it must be the version its facts describe, else the facts are asked again and
the request planned again from them (never new bytes under the old version's validators).

A contradiction later is a miss and a question to the backend, never a 500. Facts found in a
cache tier may be wrong (another configuration's, a copy from before the source changed). When
what is made from them contradicts them (a whole master of another size than they say, or too
large to decode within what they promised; facts of a native type the backend does not work
from), :meth:`ImageService.produce` asks the backend again (``facts_again`` in
``cache/facade.py``): if it says something else, the request is planned and made again from its
answer; if it stands by them (a metadata answer a pixel off its master, say), or cannot be
asked, the image is made as the facts stand, as it was before they were questioned. Facts the
backend gave for this very request, and facts it was asked about before, are not questioned.
Only whole-source renders see a contradiction of the size: a region is cut from what the facts
say.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from iiif_shim.backends.base import Backend, BackendContext, BodyShare, OpenFile, answers
from iiif_shim.backends.registry import backend_for
from iiif_shim.base.errors import BackendError, DecompressionBomb, ShimError
from iiif_shim.cache.entry import source_key
from iiif_shim.cache.facade import Caches
from iiif_shim.cache.memory import SourceCache
from iiif_shim.core import passthrough
from iiif_shim.core.planner import plan
from iiif_shim.core.routing import Router
from iiif_shim.core.settings import ServiceSettings
from iiif_shim.iiif.info import Offer, image_info
from iiif_shim.iiif.profile import Format, Version
from iiif_shim.iiif.request import ImageRequest, parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve
from iiif_shim.imaging import cost, pillow
from iiif_shim.imaging.budget import MemoryBudget, holding
from iiif_shim.imaging.engine import DecodedSource, Engine
from iiif_shim.imaging.pool import Workers
from iiif_shim.imaging.registry import engine_named
from iiif_shim.model.facts import FactsMismatch, SourceInfo
from iiif_shim.model.plan import Plan, Rendered, SourceRef, Target
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream.client import Body

log = logging.getLogger("iiif_shim")


@dataclass(frozen=True)
class Source:
    target: Target
    backend: Backend[Any]
    info: SourceInfo
    cached: bool = False  # the facts came from a cache tier, not from the backend just now


@dataclass(frozen=True)
class Prepared:
    source: Source
    plan: Plan
    # what is made from it does not question its facts (the backend stood by them, or they are
    # made for ``probe``, which leaves the cache tiers as they are)
    trusted: bool = False
    # the master's own bytes are the answer if they prove to be (``passthrough.original``)
    original: bool = False
    # the degraded tier's longest side, when planned for it (``Limits.degraded``); None: the
    # image itself
    max_size: int | None = None

    @property
    def canonical(self) -> str:
        return self.plan.resolved.canonical

    @property
    def etag(self) -> str | None:
        """The ETag of the answer as planned: an original's own (``passthrough.etag``), else
        the plan's. An original that goes the usual way has the plan's (:attr:`Made.etag`)."""
        return passthrough.etag(self.plan) if self.original else self.plan.etag


@dataclass(frozen=True)
class Passing:
    """What :meth:`ImageService.stream` found: the answer as it is (a stream, or a master's
    open file), or ``None`` for the usual way; and the request as prepared for it (planned
    again when the master proved newer than the facts it was planned from)."""

    prepared: Prepared
    body: Body | OpenFile | None

    @property
    def etag(self) -> str | None:
        """The ETag of what is sent as it is (the master's bytes have their own)."""
        return self.prepared.etag


@dataclass(frozen=True)
class Made:
    """An image, and what it was made from: the request as prepared, or as planned again from
    the backend's facts when those from a cache were found wrong (its plan, not the first one,
    gives the response's ETag and canonical link)."""

    prepared: Prepared
    rendered: Rendered

    @property
    def etag(self) -> str | None:
        """The plan's ETag: a rendered answer is never the master's own bytes."""
        return self.prepared.plan.etag


class _Contradicted(Exception):
    """What was made contradicts facts open to question (never leaves :meth:`produce`).
    ``fallback``: the error the request ends in if the facts stand (``None``: the image is made
    from them as they are)."""

    def __init__(self, fallback: BaseException | None = None) -> None:
        super().__init__()
        self.fallback = fallback


async def _nothing() -> AsyncIterator[bytes]:
    """The rest of a body held whole: nothing."""
    rest: tuple[bytes, ...] = ()
    for chunk in rest:
        yield chunk


class _Newer:
    """The master opened to be sent as it is proved another version than the facts say."""


_NEWER = _Newer()


async def _whole(body: Body, limit: int) -> bytes | None:
    """All of ``body``, when it is at most ``limit`` bytes (else ``None``, read no further)."""
    if (body.length or 0) > limit:
        return None
    parts, size = [body.head], len(body.head)
    async for chunk in body.rest:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _facts_of(backend: Backend[Any], target: Target) -> Callable[[], Awaitable[SourceInfo]]:
    """How the backend is asked for a source's facts (checked before anything uses them)."""

    async def load() -> SourceInfo:
        return backend.checked(await backend.facts(target))

    return load


@asynccontextmanager
async def open_service(
    settings: ServiceSettings, budget: MemoryBudget | None = None, metrics: Metrics | None = None
) -> AsyncIterator[ImageService]:
    """The service with its thread pool, caches (memory, and the disk and Redis tiers when
    configured) and started backends; all released on exit. ``budget`` and ``metrics``
    outlive one configuration (a reload keeps them)."""
    budget = budget or MemoryBudget(settings.memory_budget, settings.memory_wait)
    workers = Workers(settings.threads, settings.max_pending, settings.request_timeout)
    caches = Caches(settings.cache, metrics)
    context = BackendContext(workers.run, caches, metrics, budget)
    backends = {name: backend_for(name, spec) for name, spec in settings.backends.items()}
    started: list[Backend[Any]] = []
    try:
        await caches.start()
        for backend in backends.values():
            await backend.start(context)
            started.append(backend)
        yield ImageService(settings, backends, workers, caches, budget, metrics)
    finally:
        for backend in started:
            await backend.close()
        await caches.close()
        workers.close()


class ImageService:
    def __init__(
        self,
        settings: ServiceSettings,
        backends: Mapping[str, Backend[Any]],
        workers: Workers,
        caches: Caches,
        budget: MemoryBudget,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.workers = workers
        self.caches = caches
        # decoded masters by (version, reduction), of this service's engine (a reload makes
        # new caches with a new engine)
        self.decoded: SourceCache[tuple[str, int], DecodedSource] = caches.memory_cache(
            "decoded", settings.cache.decoded_bytes, lambda d: d.nbytes
        )
        self.budget = budget
        self.metrics = metrics
        self.record = metrics.pillow_step if metrics else None
        # the library doing the pixel work (imaging.engine); settings checked it can run
        imaging_settings = settings.imaging
        self.engine: Engine[Any] = engine_named(
            imaging_settings.engine, imaging_settings.vips_steps
        )
        self.router = Router(settings.routes)
        iiif = settings.iiif
        self.limits = Limits(
            iiif.max_width,
            iiif.max_height,
            iiif.max_area,
            upscale_max_to_limits=iiif.upscale_max_to_limits,
            clamp_confined=iiif.clamp_confined_size,
        )
        self.offer = Offer(
            formats=self.engine.writable_formats(), limits=self.limits, tile_size=iiif.tile_size
        )

    async def source(self, identifier: str) -> Source:
        target = self.router.route(identifier)
        backend = self.backends[target.backend]
        load = _facts_of(backend, target)
        info, cached = await self.caches.facts(
            target.backend, target.native_id, load, backend.checked
        )
        return Source(target, backend, info, cached)

    def _contradicts(self, prepared: Prepared, error: BaseException | None) -> bool:
        """Whether what happened while making ``prepared`` proves its facts wrong: ``error``
        (``None``: a whole master of another size than they say). The one place that says what
        counts: facts open to question (from a cache tier, not settled: ``Caches.settled``,
        not trusted), and a size, facts of a native type the backend does not work from, or a
        bomb while decoding a whole master (where the facts set the bounds; a region's come
        from the plan, and its bomb is the backend's)."""
        src, target = prepared.source, prepared.source.target
        if not src.cached or prepared.trusted:
            return False
        if self.caches.settled(target.backend, target.native_id, src.info):
            return False
        if error is None or isinstance(error, FactsMismatch):
            return True
        whole = prepared.plan.native.whole_source(src.info.width, src.info.height)
        return isinstance(error, DecompressionBomb) and whole

    async def _facts_again(self, prepared: Prepared) -> Prepared | None:
        """``prepared`` planned again from the facts the backend gives now; ``None`` when it
        stands by those it was planned from, or cannot be asked (then they stand)."""
        src, target = prepared.source, prepared.source.target
        load = _facts_of(src.backend, target)
        try:
            info = await self.caches.facts_again(target.backend, target.native_id, load, src.info)
        except ShimError as exc:
            log.info(
                "backend %r could not be asked again for the facts of %r (%s); they stand",
                target.backend,
                target.native_id[:200],
                exc.public_text(),
            )
            return None
        if info is None:
            return None
        request = prepared.plan.resolved.request
        return self._planned(request, Source(target, src.backend, info), prepared.max_size)

    def limits_for(self, src: Source, max_size: int | None) -> Limits:
        """The limits of a request for ``src``: the server's, or its degraded tier's."""
        if max_size is None:
            return self.limits
        return self.limits.degraded(max_size, src.info.width, src.info.height)

    async def info(
        self,
        version: Version,
        identifier: str,
        base_id: str,
        *,
        max_size: int | None = None,
        src: Source | None = None,
    ) -> tuple[dict[str, Any], Source]:
        """The info.json document, rebuilt from cached facts on every request; ``max_size``:
        its degraded tier's (what it offers confined to that tier's limits)."""
        src = src or await self.source(identifier)
        offer = self.offer
        if max_size is not None:
            offer = dataclasses.replace(offer, limits=self.limits_for(src, max_size))
        doc = image_info(version, base_id, src.info, offer, rights=src.target.rights)
        return doc, src

    def original_format(self, identifier: str, src: Source) -> Format | None:
        """The format in which ``full/max`` of ``src`` is the master's own bytes
        (``passthrough.original``: facts that allow it, its own size within the limits, a
        format offered), for a manifest to offer as the original; else ``None``. The bytes
        have the last word when it is asked for (``passthrough.as_is``)."""
        fmt = passthrough.own_format(src.info)
        if fmt is None or fmt not in self.offer.formats:
            return None
        whole = parse_image_request(Version.V3, identifier, "full", "max", "0", f"default.{fmt}")
        return fmt if self._planned(whole, src).original else None

    async def prepare(
        self, request: ImageRequest, *, max_size: int | None = None, src: Source | None = None
    ) -> Prepared:
        """``request`` planned (``max_size``: for the degraded tier, whose tier is part of the
        plan and so of its cache key and ETag)."""
        return self._planned(request, src or await self.source(request.identifier), max_size)

    def _planned(self, request: ImageRequest, src: Source, max_size: int | None = None) -> Prepared:
        info = src.info
        limits = self.limits_for(src, max_size)
        resolved = resolve(request, info.width, info.height, limits)
        the_plan = plan(
            resolved,
            src.backend.capabilities(info.native),
            info.tiles,
            self.settings.iiif.jpeg_quality,
            SourceRef(src.target.backend, src.target.native_id, info.version),
            self.engine.identity,
            tier=None if max_size is None else f"degraded:{max_size}",
            tier_scale=limits.tier_scale,
        )
        iiif = self.settings.iiif
        original = iiif.originals and passthrough.original(the_plan, info, iiif.max_source_pixels)
        return Prepared(src, the_plan, original=original, max_size=max_size)

    @asynccontextmanager
    async def stream(self, prepared: Prepared) -> AsyncIterator[Passing]:
        """The answer that passes through untouched (``passthrough.py``: a large one the backend
        made, checked as it streams in; or an original, the master's open file or stream,
        checked to be the version the facts describe), to be sent by the HTTP layer (closed
        on exit); its ``body`` is ``None`` when the request must go the buffered way (not
        streamable, the backend cannot stream it, or its bytes are not the answer). A master
        newer than the facts has them asked again (``Caches.facts_again``), and the request
        planned again from what the backend says now."""
        async with AsyncExitStack() as stack:
            yield await self._passing(prepared, stack)

    async def _passing(self, prepared: Prepared, stack: AsyncExitStack) -> Passing:
        """:meth:`stream`'s answer; what it opens is closed by ``stack``."""
        for _ in range(2):  # as planned; then once more, planned from newer facts
            body = await self._opened(prepared, stack)
            if not isinstance(body, _Newer):
                return Passing(prepared, body)
            again = await self._facts_again(prepared)
            if again is None:  # the backend stands by the facts: the usual way
                return Passing(prepared, None)
            prepared = again
        return Passing(prepared, None)

    async def _opened(
        self, prepared: Prepared, stack: AsyncExitStack
    ) -> Body | OpenFile | _Newer | None:
        """The answer as it is, opened (closed by ``stack``), ``None`` for the usual way, or
        :data:`_NEWER` when it is the master of another version than the facts say."""
        src, the_plan, original = prepared.source, prepared.plan, prepared.original
        backend = src.backend
        version = src.info.version
        if original:
            opened = await backend.open_master(src.target)
            if opened is not None:
                stack.callback(opened.file.close)
                if opened.version != version:
                    return _NEWER
                return opened if passthrough.as_is(opened.traits, the_plan) else None
        if passthrough.held(the_plan, original):
            return await self._held(prepared, stack)
        streams = None
        if passthrough.streamable(the_plan, original):
            streams = backend.stream(src.target, the_plan.native, src.info)
        if streams is None:
            return None
        body = await stack.enter_async_context(streams)
        if original and body.version != version:
            return _NEWER
        return await passthrough.matches(body, the_plan, original, backend.name, self.workers.run)

    async def _held(self, prepared: Prepared, stack: AsyncExitStack) -> Body | _Newer | None:
        """A small original read whole (from its stream, so its version is known: else as the
        usual way fetches it), as a body to send when all of it is the answer as it is
        (``passthrough.held``); ``None``: the usual way; :data:`_NEWER` when the master is not
        the version the facts describe."""
        src, the_plan = prepared.source, prepared.plan
        streams = src.backend.stream(src.target, the_plan.native, src.info)
        if streams is None:
            fetched = await src.backend.fetch(src.target, the_plan.native, src.info)
            data, version = fetched.data, src.info.version
        else:
            body = await stack.enter_async_context(streams)
            version = body.version
            data = await _whole(body, passthrough.HELD_MAX)
        if version != src.info.version:
            return _NEWER
        if data is None:  # too large to hold, or spilled to a file: the usual way
            return None
        try:
            traits = await self.workers.run(pillow.read_traits, io.BytesIO(data), src.backend.name)
        except BackendError:
            return None
        if not passthrough.as_is(traits, the_plan):
            return None
        return Body(head=data, rest=_nothing(), length=len(data), version=version)

    async def produce(
        self,
        prepared: Prepared,
        *,
        cached: bool = True,
        accept: Callable[[Rendered], bool] | None = None,
    ) -> Made:
        """The image from the first cache tier that has it (memory, disk, Redis), else
        rendered and kept in each, with what it was made from (neither looked for nor kept with
        ``ServiceSettings.keep_rendered`` off); ``cached=False`` always asks the
        backend and questions no facts (for ``probe``); ``accept``: what a cached image must
        pass, else it is made again (``Caches.image``). Facts the image contradicts are asked
        again (see the module's text)."""
        if not cached:
            prepared = dataclasses.replace(prepared, trusted=True)
        try:
            return Made(prepared, await self._cached(prepared, cached, accept))
        except _Contradicted as contradicted:
            again = await self._facts_again(prepared)
            if again is None:  # the facts stand: what they give, as before they were questioned
                if contradicted.fallback is not None:
                    raise contradicted.fallback from None
                again = dataclasses.replace(prepared, trusted=True)
            return Made(again, await self._cached(again, cached, accept))

    async def render(
        self,
        prepared: Prepared,
        *,
        cached: bool = True,
        accept: Callable[[Rendered], bool] | None = None,
    ) -> Rendered:
        """The image alone, of :meth:`produce`."""
        return (await self.produce(prepared, cached=cached, accept=accept)).rendered

    async def _cached(
        self, prepared: Prepared, cached: bool, accept: Callable[[Rendered], bool] | None
    ) -> Rendered:
        key = prepared.plan.key if cached and self.settings.keep_rendered else None
        if key is None:
            return await self._render(prepared)
        return await self.caches.image(
            prepared.plan.source, key, lambda: self._render(prepared), accept
        )

    async def _render(self, prepared: Prepared) -> Rendered:
        """Reserve the plan's memory, fetch, decode (or reuse the decoded master), finish;
        :class:`_Contradicted` when that proves the facts wrong (:meth:`_contradicts`)."""
        try:
            return await self._rendered(prepared)
        except (FactsMismatch, DecompressionBomb) as exc:
            if self._contradicts(prepared, exc):
                raise _Contradicted(exc) from exc
            raise

    async def _rendered(self, prepared: Prepared) -> Rendered:
        src, the_plan = prepared.source, prepared.plan
        info, steps, record, engine = src.info, the_plan.steps, self.record, self.engine
        max_pixels = self.settings.iiif.max_source_pixels
        whole = the_plan.native.whole_source(info.width, info.height)
        factor = engine.reduction(info.format, info.width, info.height, steps)
        version = info.version
        source = source_key(src.target.backend, src.target.native_id)
        key = (version, factor) if version else None
        full = engine.cost(the_plan, info)
        cached = whole and self.decoded.holds(source, key)
        need = engine.cost(the_plan, info, decoded_cached=cached)
        # what the backend's answer is expected to hold in memory while it is read counts too,
        # unless nothing is fetched (the decoded master is kept); more, if it holds more
        answered = src.backend.body_bytes(the_plan.native, info)
        answer = 0 if cached else answered
        reservation = await self.budget.reserve(need.total + answer)
        token = holding.set(reservation)
        share = answers.set(BodyShare(self.budget, reservation, answer))
        try:
            if whole:
                # The same master serves every tile: keep it decoded, at the reduction this
                # output allows, so a deep-zoom session neither re-reads nor re-decodes it.
                allowance = cost.Allowance(max_pixels, full.decode, (info.width, info.height))

                async def decode() -> DecodedSource:
                    # the master was cached when the reservation was made, and is gone now:
                    # its decoding gets a reservation of its own
                    extra = await self.budget.reserve(full.decode + answered) if cached else None
                    inner = holding.set(extra) if extra else None
                    own = answers.set(BodyShare(self.budget, extra, answered)) if extra else None
                    try:
                        fetched = await src.backend.fetch(src.target, the_plan.native, info)
                        decoded: DecodedSource = await self.workers.run(
                            engine.decode, fetched, factor, allowance, record
                        )
                    finally:
                        if extra is not None and inner is not None and own is not None:
                            answers.reset(own)
                            holding.reset(inner)
                            extra.release()
                    return decoded

                decoded = await self.decoded.get(source, key, decode)
                if (decoded.source_width, decoded.source_height) != (info.width, info.height):
                    if self._contradicts(prepared, None):
                        raise _Contradicted
                    if not src.cached:  # the backend's own facts: tolerated, never asked again
                        self.caches.settle(src.target.backend, src.target.native_id, info)
                body = await self.workers.run(engine.finish, decoded, steps, record)
            else:
                fetched = await src.backend.fetch(src.target, the_plan.native, info)
                as_is = passthrough.as_delivered(the_plan, fetched)
                if as_is is not None:
                    body = as_is  # a native tile, say: nothing for the pool to do
                else:
                    expected = the_plan.native.delivered_size()
                    allowance = cost.Allowance(max_pixels, full.decode, expected)
                    body = await self.workers.run(engine.render, fetched, steps, allowance, record)
        finally:
            answers.reset(share)
            holding.reset(token)
            reservation.release()
        return Rendered(body=body, media_type=the_plan.resolved.format.media_type)
