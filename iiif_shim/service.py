"""Orchestration of a request, with no aiohttp types in it.

``identifier -> route -> source facts (cached, single-flight) -> resolve -> plan ->
result cache -> backend fetch -> Pillow in the pool -> Rendered``. Image requests are prepared
first (everything up to the plan, which yields the ETag) so the HTTP layer can answer a
conditional request with 304 before any pixel is touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from . import imaging
from .backends import BACKEND_TYPES, Backend
from .cache import FactsCache, SizedCache
from .iiif.info import Offer, image_info
from .iiif.profile import Version
from .iiif.request import ImageRequest
from .iiif.resolve import Limits, resolve
from .mapping import Router
from .model import Plan, Rendered, SourceInfo, Target
from .planner import plan
from .pool import Workers
from .settings import Settings


@dataclass(frozen=True)
class Source:
    target: Target
    backend: Backend
    info: SourceInfo


@dataclass(frozen=True)
class Prepared:
    source: Source
    plan: Plan
    key: str | None  # everything that changes the output bytes; None: source version unknown
    etag: str | None

    @property
    def canonical(self) -> str:
        return self.plan.resolved.canonical


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[ImageService]:
    """The service with its thread pool and started backends; all released on exit."""
    server = settings.server
    workers = Workers(server.workers, server.max_pending, server.request_timeout)
    backends = {
        name: BACKEND_TYPES[spec.type](name, spec, workers.run)
        for name, spec in settings.backends.items()
    }
    started: list[Backend] = []
    try:
        for backend in backends.values():
            await backend.start()
            started.append(backend)
        yield ImageService(settings, backends, workers)
    finally:
        for backend in started:
            await backend.close()
        workers.close()


class ImageService:
    def __init__(
        self, settings: Settings, backends: Mapping[str, Backend], workers: Workers
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.workers = workers
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
            formats=imaging.writable_formats(), limits=self.limits, tile_size=iiif.tile_size
        )
        self.facts = FactsCache(settings.cache.info_entries, settings.cache.info_ttl)
        self.results: SizedCache[str, Rendered] = SizedCache(
            settings.cache.image_bytes, lambda r: len(r.body)
        )
        self.decoded: SizedCache[tuple[str, str, str, int], imaging.Decoded] = SizedCache(
            settings.cache.decoded_bytes, lambda d: d.nbytes
        )

    async def source(self, identifier: str) -> Source:
        target = self.router.route(identifier)
        backend = self.backends[target.backend]
        info = await self.facts.get(
            (target.backend, target.native_id), lambda: backend.facts(target)
        )
        return Source(target, backend, info)

    async def info(
        self, version: Version, identifier: str, base_id: str
    ) -> tuple[dict[str, Any], SourceInfo]:
        """The info.json document, rebuilt from cached facts on every request."""
        src = await self.source(identifier)
        doc = image_info(version, base_id, src.info, self.offer, rights=src.target.rights)
        return doc, src.info

    async def prepare(self, request: ImageRequest) -> Prepared:
        src = await self.source(request.identifier)
        resolved = resolve(request, src.info.width, src.info.height, self.limits)
        the_plan = plan(
            resolved,
            src.backend.capabilities_for(src.info),
            src.info.tiles,
            self.settings.iiif.jpeg_quality,
        )
        if not src.info.version:  # nothing tells a changed source: neither cache nor tag it
            return Prepared(src, the_plan, None, None)
        key = "|".join(
            (
                src.target.backend,
                src.target.native_id,
                src.info.version,
                resolved.canonical,
                str(self.settings.iiif.jpeg_quality),
            )
        )
        etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
        return Prepared(src, the_plan, key, etag)

    async def render(self, prepared: Prepared, *, cached: bool = True) -> Rendered:
        """The image; ``cached=False`` always asks the backend (for ``probe``)."""
        key = prepared.key if cached else None
        return await self.results.get(key, lambda: self._render(prepared))

    async def _render(self, prepared: Prepared) -> Rendered:
        src, the_plan = prepared.source, prepared.plan
        info, steps = src.info, the_plan.steps
        max_pixels = self.settings.iiif.max_source_pixels
        if the_plan.native.whole_source(info.width, info.height):
            # The same master serves every tile: keep it decoded, at the reduction this output
            # allows, so a deep-zoom session neither re-reads nor re-decodes it per tile.
            factor = imaging.reduction(info.format, info.width, info.height, steps)
            version = info.version
            key = (src.target.backend, src.target.native_id, version, factor) if version else None

            async def decode() -> imaging.Decoded:
                fetched = await src.backend.fetch(src.target, the_plan.native, info)
                decoded: imaging.Decoded = await self.workers.run(
                    imaging.decode, fetched, factor, max_pixels
                )
                return decoded

            decoded = await self.decoded.get(key, decode)
            body = await self.workers.run(imaging.finish, decoded, steps)
        else:
            fetched = await src.backend.fetch(src.target, the_plan.native, info)
            body = await self.workers.run(imaging.render, fetched, steps, max_pixels)
        return Rendered(body=body, media_type=the_plan.resolved.format.media_type)
