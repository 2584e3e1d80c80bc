"""Tile pyramids: fetch the tiles a region needs at a level, stitch them.

Shared by every backend whose server keeps an image as levels of tiles (DeepZoom, Zoomify,
IIPImage's ``JTL``, an upstream IIIF service's tiles). The pyramid itself (its levels, tile size
and overlap, and its geometry) is a fact of the source (``facts.Pyramid``); the backend supplies
the URL of one tile. For a region at a reduction, :func:`assemble` fetches only the tiles that
intersect it, concurrently (bounded by the backend's connection limit), keeps recently used
tiles in a small cache, and stitches them in the thread pool, trimming overlap. A request that
is exactly one tile returns that tile's bytes untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..cache import SizedCache
from ..errors import BackendError, NotFound, NotImplementedFeature
from ..facts import Level, NativeFacts, Pyramid, PyramidFacts, SourceInfo
from ..iiif.profile import Format
from ..iiif.resolve import Box
from ..imaging import Piece, Record, stitch
from ..model import Capabilities, Fetched, NativeOp, Target
from ..schema import at_least, option
from .base import RunBlocking, UpstreamBackend
from .upstream import UpstreamSettings

MAX_TILES = 2048  # per request: past this the request is refused (501), not queued

TileUrl = Callable[[Level, int, int], str]
Get = Callable[[str], Awaitable[bytes]]


async def assemble(
    pyramid: Pyramid,
    region: Box,
    factor: int,
    tile_url: TileUrl,
    get: Get,
    run_blocking: RunBlocking,
    cache: SizedCache[str, bytes],
    described: str,
    record: Record | None = None,
) -> Fetched:
    """The region at ``1/factor`` (or the nearest finer level), from as few tiles as it needs."""
    level = pyramid.level(factor)
    x0, y0, x1, y1 = pyramid.window(region, level)
    cols = range(x0 // pyramid.tile_width, (x1 - 1) // pyramid.tile_width + 1)
    rows = range(y0 // pyramid.tile_height, (y1 - 1) // pyramid.tile_height + 1)
    count = len(cols) * len(rows)
    if count > MAX_TILES:
        raise NotImplementedFeature(
            f"this request would need {count} tiles from {described}; ask for a smaller region "
            "or size"
        )
    places = [(col, row) for row in rows for col in cols]
    urls = [tile_url(level, col, row) for col, row in places]
    bodies = await asyncio.gather(*(cache.get(url, partial(get, url)) for url in urls))
    if count == 1 and not pyramid.overlap:
        col, row = places[0]
        if (x0, y0, x1, y1) == pyramid.cell(level, col, row):
            return Fetched(data=bodies[0], described=described)  # exactly one native tile
    pieces = [
        Piece(
            body,
            pyramid.tile_origin(col, row),
            pyramid.cell(level, col, row),
            pyramid.tile_bounds(level, col, row),
        )
        for body, (col, row) in zip(bodies, places, strict=True)
    ]
    image = await run_blocking(stitch, (x0, y0, x1, y1), pieces, described, record)
    return Fetched(image=image, described=described)


@dataclass(frozen=True, kw_only=True)
class PyramidSettings(UpstreamSettings):
    tile_cache_bytes: int = option(
        32 * 1024 * 1024,
        doc="recent tiles kept (neighbouring requests share tiles)",
        check=at_least(0),
    )


class PyramidBackend(UpstreamBackend):
    """A backend that only has tiles: any region at any of its levels, by stitching."""

    settings: PyramidSettings

    @classmethod
    def capabilities(cls, settings: Any, native: NativeFacts | None = None) -> Capabilities:
        suffix = native.suffix.lower() if isinstance(native, PyramidFacts) else ""
        fmt = {"jpg": Format.JPG, "jpeg": Format.JPG, "png": Format.PNG}.get(suffix)
        return Capabilities(
            region=True, reductions=True, formats=frozenset({fmt}) if fmt else frozenset()
        )

    async def start(self) -> None:
        await super().start()
        observe = self.metrics.cache_lookup if self.metrics else None
        self.tiles: SizedCache[str, bytes] = SizedCache(
            self.settings.tile_cache_bytes, len, "tile", observe
        )

    @staticmethod
    def pyramid_facts(info: SourceInfo) -> PyramidFacts:
        assert isinstance(info.native, PyramidFacts)
        return info.native

    def tile_base(self, target: Target) -> str:
        """What the tile paths of ``target`` hang from."""
        raise NotImplementedError

    def tile_url(self, base: str, facts: PyramidFacts, level: Level, col: int, row: int) -> str:
        raise NotImplementedError

    async def tile(self, url: str, source: str) -> bytes:
        try:
            answer = await self.upstream.get(url, image=True, source=source, what="a tile")
            return answer.body
        except NotFound:  # the description promised it: the pyramid is broken
            raise BackendError(
                f"backend '{self.name}': a tile the pyramid should have is missing"
            ) from None

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        facts = self.pyramid_facts(info)
        base = self.tile_base(target)
        return await assemble(
            facts.pyramid,
            op.region,
            op.reduction,
            lambda level, col, row: self.tile_url(base, facts, level, col, row),
            partial(self.tile, source=target.native_id),
            self.run_blocking,
            self.tiles,
            f"backend '{self.name}'",
            self.record,
        )
