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
from ..errors import BackendError, NotFound, NotImplementedFeature
from ..iiif.profile import Format
from ..iiif.resolve import Box
from ..model import Capabilities, Fetched, NativeOp, SourceInfo, Target, TileGrid
from ..schema import at_least, option
from .base import Backend
from .upstream import Upstream, UpstreamSettings

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
        cls,
        width: int,
        height: int,
        tile_width: int,
        tile_height: int,
        *,
        count: int | None = None,
        overlap: int = 0,
        floor: bool = False,
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
        return TileGrid(
            self.tile_width, self.tile_height, tuple(level.factor for level in self.levels)
        )

    def level(self, factor: int) -> Level:
        """The level for a reduction: that factor, or the nearest finer one available."""
        usable = [lv for lv in self.levels if lv.factor <= max(factor, 1)]
        return max(usable, key=lambda lv: lv.factor) if usable else self.levels[0]

    def columns(self, level: Level) -> int:
        return math.ceil(level.width / self.tile_width)

    def rows(self, level: Level) -> int:
        return math.ceil(level.height / self.tile_height)

    def window(self, region: Box, level: Level) -> tuple[int, int, int, int]:
        """The region in the level's pixels (x0, y0, x1, y1). Level pixel i holds full-image
        pixels [i*f, (i+1)*f), so this is exact for pyramids made by halving."""
        f = level.factor
        x0 = min(region.x // f, level.width - 1)
        y0 = min(region.y // f, level.height - 1)
        x1 = max(min(math.ceil((region.x + region.w) / f), level.width), x0 + 1)
        y1 = max(min(math.ceil((region.y + region.h) / f), level.height), y0 + 1)
        return x0, y0, x1, y1

    def cell(self, level: Level, col: int, row: int) -> tuple[int, int, int, int]:
        """The level pixels a tile stands for (overlap excluded)."""
        x, y = col * self.tile_width, row * self.tile_height
        return (
            x,
            y,
            min(x + self.tile_width, level.width),
            min(y + self.tile_height, level.height),
        )

    def tile_origin(self, col: int, row: int) -> tuple[int, int]:
        """Level position of a tile image's top-left pixel (overlap included)."""
        return (
            max(0, col * self.tile_width - self.overlap),
            max(0, row * self.tile_height - self.overlap),
        )


TileUrl = Callable[[Level, int, int], str]
Get = Callable[[str], Awaitable[bytes]]
RunBlocking = Callable[..., Awaitable[object]]


@dataclass(frozen=True)
class _Piece:
    data: bytes
    origin: tuple[int, int]  # level position of the tile image's (0, 0)
    cell: tuple[int, int, int, int]  # level pixels it stands for (its overlap left out)


def _stitch(window: tuple[int, int, int, int], pieces: list[_Piece]) -> Image.Image:
    x0, y0, x1, y1 = window
    canvas: Image.Image | None = None
    for piece in pieces:
        ox, oy = piece.origin
        cx0, cy0, cx1, cy1 = piece.cell
        with Image.open(io.BytesIO(piece.data)) as tile:
            tile.load()
            if canvas is None:
                mode = tile.mode if tile.mode in ("L", "RGB", "RGBA", "LA") else "RGB"
                canvas = Image.new(mode, (x1 - x0, y1 - y0))
            part = tile.crop((cx0 - ox, cy0 - oy, cx1 - ox, cy1 - oy))
            canvas.paste(part.convert(canvas.mode), (cx0 - x0, cy0 - y0))
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
        if (x0, y0, x1, y1) == pyramid.cell(level, col, row):
            return Fetched(data=bodies[0], described=described)  # exactly one native tile
    pieces = [
        _Piece(body, pyramid.tile_origin(col, row), pyramid.cell(level, col, row))
        for body, (col, row) in zip(bodies, places, strict=True)
    ]
    try:
        image = await run_blocking(_stitch, (x0, y0, x1, y1), pieces)
    except (OSError, ValueError, SyntaxError) as exc:
        raise BackendError(f"{described} sent a tile that is not an image ({exc})") from None
    assert isinstance(image, Image.Image)
    return Fetched(image=image, described=described)


@dataclass(frozen=True)
class PyramidSource:
    """What a pyramid backend keeps about one image (in ``SourceInfo.native``)."""

    base: str  # URL the tile paths hang from
    pyramid: Pyramid
    suffix: str  # tile file extension, e.g. "jpeg"


@dataclass(frozen=True, kw_only=True)
class PyramidSettings(UpstreamSettings):
    tile_cache_bytes: int = option(
        32 * 1024 * 1024,
        doc="recent tiles kept (neighbouring requests share tiles)",
        check=at_least(0),
    )


class PyramidBackend(Backend):
    """A backend that only has tiles: any region at any of its levels, by stitching."""

    settings: PyramidSettings
    capabilities = Capabilities(region=True, reductions=True)

    async def start(self) -> None:
        self.upstream = Upstream(self.name, self.settings)
        self._tiles: SizedCache[str, bytes] = SizedCache(self.settings.tile_cache_bytes, len)
        await self.upstream.start()

    async def close(self) -> None:
        await self.upstream.close()

    def source(self, info: SourceInfo) -> PyramidSource:
        assert isinstance(info.native, PyramidSource)
        return info.native

    def tile_url(self, source: PyramidSource, level: Level, col: int, row: int) -> str:
        raise NotImplementedError

    async def tile(self, url: str) -> bytes:
        try:
            return (await self.upstream.get(url, image=True, what="a tile")).body
        except NotFound:  # the description promised it: the pyramid is broken
            raise BackendError(
                f"backend '{self.name}': a tile the pyramid should have is missing"
            ) from None

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        source = self.source(info)
        return await assemble(
            source.pyramid,
            op.region,
            op.reduction,
            lambda level, col, row: self.tile_url(source, level, col, row),
            self.tile,
            self.run_blocking,
            self._tiles,
            f"backend '{self.name}'",
        )

    def capabilities_for(self, info: SourceInfo) -> Capabilities:
        fmt = {"jpg": Format.JPG, "jpeg": Format.JPG, "png": Format.PNG}.get(
            self.source(info).suffix.lower()
        )
        return Capabilities(
            region=True, reductions=True, formats=frozenset({fmt}) if fmt else frozenset()
        )
