"""Tile pyramids: pick a level, fetch the tiles a region needs, stitch them.

Shared by every backend whose server keeps an image as levels of tiles (DeepZoom, Zoomify,
IIPImage's ``JTL``, a level-0 IIIF service). A :class:`Pyramid` describes the levels (each a
power-of-two reduction of the full image), the tile size and any overlap; the backend supplies
the URL of one tile. For a region at a reduction, :func:`assemble` fetches only the tiles that
intersect it, concurrently (bounded by the backend's connection limit), keeps recently used
tiles in a small cache, and stitches them in the thread pool, trimming overlap. A request that
is exactly one tile returns that tile's bytes untouched.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from PIL import Image

from ..cache import SizedCache
from ..errors import BackendError, NotImplementedFeature
from ..iiif.resolve import Box
from ..model import Fetched, TileGrid

MAX_TILES = 2048  # per request: past this the request is refused (501), not queued


@dataclass(frozen=True)
class Level:
    factor: int  # 1, 2, 4, ...: the level is the full image reduced by this factor
    width: int
    height: int


@dataclass(frozen=True)
class Pyramid:
    width: int
    height: int
    tile_width: int
    tile_height: int
    levels: tuple[Level, ...]  # largest first; levels[0].factor == 1
    overlap: int = 0  # pixels a tile repeats of each neighbour (DeepZoom)

    @classmethod
    def halving(
        cls, width: int, height: int, tile_width: int, tile_height: int, *,
        count: int | None = None, overlap: int = 0, floor: bool = False,
    ) -> Pyramid:
        """Levels made by halving (rounding up, or down with ``floor``) until one tile holds
        the image, or ``count`` levels."""
        levels = []
        factor = 1
        while True:
            if floor:
                w, h = max(1, width // factor), max(1, height // factor)
            else:
                w, h = math.ceil(width / factor), math.ceil(height / factor)
            levels.append(Level(factor, w, h))
            if count is not None:
                if len(levels) >= count:
                    break
            elif w <= tile_width and h <= tile_height:
                break
            factor *= 2
        return cls(width, height, tile_width, tile_height, tuple(levels), overlap)

    @property
    def grid(self) -> TileGrid:
        return TileGrid(self.tile_width, self.tile_height,
                        tuple(level.factor for level in self.levels))

    def level(self, factor: int) -> Level:
        """The level for a reduction: that factor, or the nearest finer one available."""
        usable = [lv for lv in self.levels if lv.factor <= max(factor, 1)]
        return max(usable, key=lambda lv: lv.factor) if usable else self.levels[0]

    def columns(self, level: Level) -> int:
        return math.ceil(level.width / self.tile_width)

    def rows(self, level: Level) -> int:
        return math.ceil(level.height / self.tile_height)

    def window(self, region: Box, level: Level) -> tuple[int, int, int, int]:
        """The region in the level's pixels (x0, y0, x1, y1)."""
        sx, sy = level.width / self.width, level.height / self.height
        x0 = min(math.floor(region.x * sx + 1e-9), level.width - 1)
        y0 = min(math.floor(region.y * sy + 1e-9), level.height - 1)
        x1 = max(min(math.ceil((region.x + region.w) * sx - 1e-9), level.width), x0 + 1)
        y1 = max(min(math.ceil((region.y + region.h) * sy - 1e-9), level.height), y0 + 1)
        return x0, y0, x1, y1

    def tile_origin(self, col: int, row: int) -> tuple[int, int]:
        """Level position of a tile image's top-left pixel (overlap included)."""
        return (col * self.tile_width - (self.overlap if col else 0),
                row * self.tile_height - (self.overlap if row else 0))


TileUrl = Callable[[Level, int, int], str]
Get = Callable[[str], Awaitable[bytes]]
RunBlocking = Callable[..., Awaitable[object]]


def _stitch(
    size: tuple[int, int], window_origin: tuple[int, int],
    tiles: list[tuple[bytes, tuple[int, int]]],
) -> Image.Image:
    canvas: Image.Image | None = None
    for data, (ox, oy) in tiles:
        with Image.open(io.BytesIO(data)) as tile:
            tile.load()
            if canvas is None:
                mode = tile.mode if tile.mode in ("L", "RGB", "RGBA", "LA") else "RGB"
                canvas = Image.new(mode, size)
            canvas.paste(tile.convert(canvas.mode), (ox - window_origin[0], oy - window_origin[1]))
    assert canvas is not None
    return canvas


async def assemble(
    pyramid: Pyramid,
    region: Box,
    factor: int,
    tile_url: TileUrl,
    get: Get,
    run_blocking: RunBlocking,
    cache: SizedCache[str, bytes],
    described: str,
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
        ox, oy = pyramid.tile_origin(col, row)
        right = min(ox + pyramid.tile_width, level.width)
        bottom = min(oy + pyramid.tile_height, level.height)
        if (x0, y0, x1, y1) == (ox, oy, right, bottom):
            return Fetched(data=bodies[0], described=described)  # exactly one native tile
    tiles = [(body, pyramid.tile_origin(col, row)) for body, (col, row) in
             zip(bodies, places, strict=True)]
    try:
        image = await run_blocking(_stitch, (x1 - x0, y1 - y0), (x0, y0), tiles)
    except (OSError, ValueError, SyntaxError) as exc:
        raise BackendError(f"{described} sent a tile that is not an image ({exc})") from None
    assert isinstance(image, Image.Image)
    return Fetched(image=image, described=described)
