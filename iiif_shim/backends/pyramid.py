"""Tile pyramids: fetch the tiles a region needs at a level, stitch them.

Shared by every backend whose server keeps an image as levels of tiles (DeepZoom, Zoomify,
IIPImage's ``JTL``, an upstream IIIF service's tiles). The pyramid itself (its levels, tile size
and overlap, and its geometry) is a fact of the source (``facts.Pyramid``); the backend supplies
the URL of one tile. For a region at a reduction, :func:`assemble` fetches only the tiles that
intersect it, concurrently (bounded by the backend's connection limit), keeps recently used
tiles in a small cache (made by the cache facade, so purges reach it), and stitches them in
the thread pool, trimming overlap. A request that is exactly one tile returns that tile's bytes
untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

from iiif_shim.backends.base import BackendContext, RunBlocking, UpstreamBackend
from iiif_shim.backends.settings import PyramidSettings
from iiif_shim.base.errors import BackendError, NotFound, NotImplementedFeature
from iiif_shim.cache.entry import source_key
from iiif_shim.cache.memory import SourceCache
from iiif_shim.iiif.profile import Format
from iiif_shim.iiif.resolve import Box
from iiif_shim.imaging.engine import Record
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.pillow import Piece, stitch
from iiif_shim.model.facts import (
    Level,
    NativeFacts,
    Pyramid,
    PyramidFacts,
    SourceInfo,
    native_as,
)
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.upstream.client import Upstream

P = TypeVar("P", bound=PyramidSettings)
MAX_TILES = 2048  # per request: past this the request is refused (501), not queued

TileUrl = Callable[[Level, int, int], str]
Get = Callable[[str, int], Awaitable[bytes]]  # (url, the most bytes it may have)
_TILE_SLACK_BYTES = 64 * 1024  # headers, tables and poor compression, past the raw pixels


async def fetch_tile(upstream: Upstream, url: str, cap: int, image_id: str) -> bytes:
    """One tile's bytes; a missing tile the description promised is a broken pyramid (502)."""
    try:
        answer = await upstream.get(url, image=True, image_id=image_id, what="a tile", cap=cap)
    except NotFound:
        raise BackendError(
            f"backend '{upstream.backend}': a tile the pyramid should have is missing"
        ) from None
    return answer.body


async def assemble(
    pyramid: Pyramid,
    region: Box,
    factor: int,
    tile_url: TileUrl,
    get: Get,
    run_blocking: RunBlocking,
    cache: SourceCache[str, bytes],
    source: str,
    described: str,
    record: Record | None = None,
    concurrency: int = 4,
) -> Fetched:
    """The region at ``1/factor`` (or the nearest finer level), from as few tiles as it needs,
    at most ``concurrency`` at a time; each tile's body may be at most what its cell's raw
    pixels take (plus a little). Tiles are kept in ``cache`` by URL under ``source`` (the
    source's cache key, so a purge of the source drops them). The first failure cancels the
    tiles not fetched yet."""
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
    slots = asyncio.Semaphore(concurrency)

    async def fetch_one(col: int, row: int) -> bytes:
        url = tile_url(level, col, row)
        w, h = pyramid.tile_bounds(level, col, row)
        async with slots:
            return await cache.get(source, url, partial(get, url, 4 * w * h + _TILE_SLACK_BYTES))

    bodies = await _all_or_first_error([fetch_one(col, row) for col, row in places])
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


async def _all_or_first_error(calls: list[Coroutine[Any, Any, bytes]]) -> list[bytes]:
    """Every call's result in order; on the first failure the rest are cancelled and it is
    raised as it is (not wrapped, as ``TaskGroup`` would)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


class PyramidBackend(UpstreamBackend[P]):
    """A backend that only has tiles: any region at any of its levels, by stitching."""

    natives = (PyramidFacts,)

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        suffix = native.suffix.lower() if isinstance(native, PyramidFacts) else ""
        fmt = {"jpg": Format.JPG, "jpeg": Format.JPG, "png": Format.PNG}.get(suffix)
        return Capabilities(
            region=True, reductions=True, formats=frozenset({fmt}) if fmt else frozenset()
        )

    async def start(self, context: BackendContext) -> None:
        await super().start(context)
        self.tiles: SourceCache[str, bytes] = context.caches.memory_cache(
            "tile", self.settings.tile_cache_bytes, len
        )

    def pyramid_facts(self, info: SourceInfo) -> PyramidFacts:
        """The source's pyramid (:class:`FactsMismatch` for facts of another backend type)."""
        return native_as(info, PyramidFacts, self.name)

    def tile_base(self, target: Target) -> str:
        """What the tile paths of ``target`` hang from."""
        raise NotImplementedError

    def tile_url(self, base: str, facts: PyramidFacts, level: Level, col: int, row: int) -> str:
        raise NotImplementedError

    async def tile(self, url: str, cap: int, image_id: str) -> bytes:
        return await fetch_tile(self.upstream, url, cap, image_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        facts = self.pyramid_facts(info)
        base = self.tile_base(target)
        return await assemble(
            facts.pyramid,
            op.region,
            op.reduction,
            lambda level, col, row: self.tile_url(base, facts, level, col, row),
            partial(self.tile, image_id=target.native_id),
            self.context.run_blocking,
            self.tiles,
            source_key(self.name, target.native_id),
            f"backend '{self.name}'",
            self.context.record,
            self.settings.image_share,
        )
