"""Orchestration of a request, with no aiohttp types in it.

``identifier -> route -> source facts (cached, single-flight, checked) -> resolve -> plan ->
result cache -> backend fetch -> Pillow in the pool -> Rendered``. Image requests are prepared
first (everything up to the plan, which yields the cache key and the ETag) so the HTTP layer can
answer a conditional request with 304 before any pixel is touched. An image that contradicts
the facts it was planned from (a master larger, or of another size, than they say) has the
facts asked of the backend again, once (``cache.facade.Caches.facts_again``): when they
changed, it is planned and made again from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from iiif_shim.backends.base import Backend, BackendContext
from iiif_shim.backends.registry import backend_for
from iiif_shim.base.errors import DecompressionBomb
from iiif_shim.cache.entry import source_key
from iiif_shim.cache.facade import Caches
from iiif_shim.cache.memory import SourceCache
from iiif_shim.core import passthrough
from iiif_shim.core.planner import plan
from iiif_shim.core.routing import Router
from iiif_shim.core.settings import ServiceSettings
from iiif_shim.iiif.info import Offer, image_info
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import ImageRequest
from iiif_shim.iiif.resolve import Limits, resolve
from iiif_shim.imaging import cost
from iiif_shim.imaging.budget import MemoryBudget, holding
from iiif_shim.imaging.engine import DecodedSource, Engine
from iiif_shim.imaging.pool import Workers
from iiif_shim.imaging.registry import engine_named
from iiif_shim.model.facts import SourceInfo, checked
from iiif_shim.model.plan import Plan, Rendered, SourceRef, Target
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream.client import Body


@dataclass(frozen=True)
class Source:
    target: Target
    backend: Backend[Any]
    info: SourceInfo


@dataclass(frozen=True)
class Prepared:
    source: Source
    plan: Plan
    facts_confirmed: bool = False  # asked of the backend again after the image contradicted them

    @property
    def canonical(self) -> str:
        return self.plan.resolved.canonical


class _Contradicted(Exception):
    """The decoded master is not of the size the facts say (never leaves :meth:`render`)."""


def _facts_of(backend: Backend[Any], target: Target) -> Callable[[], Awaitable[SourceInfo]]:
    """How the backend is asked for a source's facts (checked before anything uses them)."""

    async def load() -> SourceInfo:
        return checked(await backend.facts(target), backend.name)

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
    context = BackendContext(workers.run, caches, metrics)
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
        info = await self.caches.facts(target.backend, target.native_id, load)
        return Source(target, backend, info)

    async def _facts_again(self, prepared: Prepared) -> Prepared | None:
        """``prepared`` planned again from the facts the backend gives now, or ``None`` when
        they are those it was planned from."""
        src, target = prepared.source, prepared.source.target
        load = _facts_of(src.backend, target)
        info = await self.caches.facts_again(target.backend, target.native_id, load, src.info)
        if info is None:
            return None
        again = self._planned(prepared.plan.resolved.request, Source(target, src.backend, info))
        return dataclasses.replace(again, facts_confirmed=True)

    async def info(
        self, version: Version, identifier: str, base_id: str
    ) -> tuple[dict[str, Any], Source]:
        """The info.json document, rebuilt from cached facts on every request."""
        src = await self.source(identifier)
        doc = image_info(version, base_id, src.info, self.offer, rights=src.target.rights)
        return doc, src

    async def prepare(self, request: ImageRequest) -> Prepared:
        return self._planned(request, await self.source(request.identifier))

    def _planned(self, request: ImageRequest, src: Source) -> Prepared:
        info = src.info
        resolved = resolve(request, info.width, info.height, self.limits)
        the_plan = plan(
            resolved,
            src.backend.capabilities(info.native),
            info.tiles,
            self.settings.iiif.jpeg_quality,
            SourceRef(src.target.backend, src.target.native_id, info.version),
            self.engine.identity,
        )
        return Prepared(src, the_plan)

    @asynccontextmanager
    async def stream(self, prepared: Prepared) -> AsyncIterator[Body | None]:
        """The backend's answer as a checked stream, for a large answer that passes through
        untouched (``passthrough.py``); ``None`` when it must go the buffered way (not
        streamable, the backend cannot stream it, or its header does not match the plan)."""
        src, the_plan = prepared.source, prepared.plan
        streams = None
        if passthrough.streamable(the_plan, src.info):
            streams = src.backend.stream(src.target, the_plan.native, src.info)
        if streams is None:
            yield None
            return
        async with streams as body:
            ok = await passthrough.matches(body, the_plan, src.backend.name, self.workers.run)
            yield body if ok else None

    async def render(
        self,
        prepared: Prepared,
        *,
        cached: bool = True,
        accept: Callable[[Rendered], bool] | None = None,
    ) -> Rendered:
        """The image from the first cache tier that has it (memory, disk, Redis), else
        rendered and kept in each; ``cached=False`` always asks the backend (for ``probe``);
        ``accept``: what a cached image must pass, else it is made again (``Caches.image``).
        An image that contradicts its facts has them asked again (see the module's text)."""
        try:
            return await self._cached(prepared, cached, accept)
        except (DecompressionBomb, _Contradicted) as exc:
            if prepared.facts_confirmed:
                raise
            again = await self._facts_again(prepared)
            if again is None:  # the backend's own facts: a bomb is its, a size is tolerated
                if isinstance(exc, DecompressionBomb):
                    raise
                again = dataclasses.replace(prepared, facts_confirmed=True)
            return await self._cached(again, cached, accept)

    async def _cached(
        self, prepared: Prepared, cached: bool, accept: Callable[[Rendered], bool] | None
    ) -> Rendered:
        key = prepared.plan.key if cached else None
        if key is None:
            return await self._render(prepared)
        return await self.caches.image(
            prepared.plan.source, key, lambda: self._render(prepared), accept
        )

    async def _render(self, prepared: Prepared) -> Rendered:
        """Reserve the plan's memory, fetch, decode (or reuse the decoded master), finish."""
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
        reservation = await self.budget.reserve(need.total)
        token = holding.set(reservation)
        try:
            if whole:
                # The same master serves every tile: keep it decoded, at the reduction this
                # output allows, so a deep-zoom session neither re-reads nor re-decodes it.
                allowance = cost.Allowance(max_pixels, full.decode, (info.width, info.height))

                async def decode() -> DecodedSource:
                    # the master was cached when the reservation was made, and is gone now:
                    # its decoding gets a reservation of its own
                    extra = await self.budget.reserve(full.decode) if cached else None
                    inner = holding.set(extra) if extra else None
                    try:
                        fetched = await src.backend.fetch(src.target, the_plan.native, info)
                        decoded: DecodedSource = await self.workers.run(
                            engine.decode, fetched, factor, allowance, record
                        )
                    finally:
                        if extra is not None and inner is not None:
                            holding.reset(inner)
                            extra.release()
                    return decoded

                decoded = await self.decoded.get(source, key, decode)
                size = (decoded.source_width, decoded.source_height)
                if size != (info.width, info.height) and not prepared.facts_confirmed:
                    raise _Contradicted
                body = await self.workers.run(engine.finish, decoded, steps, record)
            else:
                fetched = await src.backend.fetch(src.target, the_plan.native, info)
                as_is = passthrough.as_delivered(the_plan, info, fetched)
                if as_is is not None:
                    body = as_is  # a native tile, say: nothing for the pool to do
                else:
                    expected = the_plan.native.delivered_size()
                    allowance = cost.Allowance(max_pixels, full.decode, expected)
                    body = await self.workers.run(engine.render, fetched, steps, allowance, record)
        finally:
            holding.reset(token)
            reservation.release()
        return Rendered(body=body, media_type=the_plan.resolved.format.media_type)
