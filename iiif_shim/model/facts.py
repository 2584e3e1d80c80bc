"""What a backend knows about one source image, as typed, frozen values.

- :class:`SourceInfo`: width, height, colour, format, version, the native tile grid, the
  backend's own description in ``native`` (one of :data:`NativeFacts`: a tile pyramid, an
  upstream IIIF service's declared abilities), never an untyped object, and a JPEG 2000's
  :class:`Codestream` (its tiling, levels and size: what decoding it costs);
- :class:`Pyramid` and its geometry (levels, tiles, the window a region needs at a level), pure;
- :func:`checked`: the one check every backend's facts pass before anything uses them (sizes
  at least 1, sane tile sizes and scale factors, bounded counts, ``native`` of a kind the
  backend reports, and a JPEG 2000's layout present, with what is decoded here: at most
  :data:`MAX_COMPONENTS` components and :data:`MAX_CODESTREAM_TILES` tiles), so a malformed
  answer from a legacy server or a hostile header is a 502 naming the backend, never a 500 or
  an allocation further down (and facts a cache kept that fail it are a miss);
- :func:`native_as` and :class:`FactsMismatch`: ``native`` as the type a backend works from,
  else an error (a 502, or facts asked again where they came from a cache:
  ``core/service.py``);
- :func:`to_json` / :func:`from_json`: the facts as plain JSON, for caches shared between
  processes; ``from_json`` takes nothing on trust (every field of the type its declaration
  says, every required one present: ValueError otherwise), and what it reads passes
  :func:`checked` before use, like a backend's answer.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from iiif_shim.base.errors import BackendError
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Colour, Version
from iiif_shim.iiif.resolve import Box
from iiif_shim.model.plan import Capabilities

# Limits on what a backend may report; past them its answer is refused as malformed.
MAX_SIDE = 1 << 20  # pixels on one side of a source
MIN_TILE, MAX_TILE = 8, 8192  # pixels on one side of a native tile
MAX_LEVELS = 24  # pyramid levels (scale factors 1 .. 2**23)
_YEAR_10000 = 253402300800  # epoch seconds
N = TypeVar("N")


@dataclass(frozen=True)
class Level:
    factor: int  # 1, 2, 4, ...: the level is the full image reduced by this factor
    width: int
    height: int


@dataclass(frozen=True)
class Pyramid:
    """A source kept as levels of tiles, each level a power-of-two reduction of the full image."""

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
    ) -> Pyramid:
        """Levels made by halving (rounding up) until one tile holds the image, or ``count``
        levels (at most :data:`MAX_LEVELS` either way). ValueError for sizes out of bounds."""
        if not (_side(width) and _side(height)):
            raise ValueError(f"image size {width}x{height}")
        if not all(type(t) is int and MIN_TILE <= t <= MAX_TILE for t in (tile_width, tile_height)):
            raise ValueError(f"tile size {tile_width}x{tile_height}")
        levels: list[Level] = []
        factor = 1
        while len(levels) < MAX_LEVELS:
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

    def tile_bounds(self, level: Level, col: int, row: int) -> tuple[int, int]:
        """The largest a tile image of this cell may be, overlap included."""
        _, _, x1, y1 = self.cell(level, col, row)
        ox, oy = self.tile_origin(col, row)
        return (
            min(x1 + self.overlap, level.width) - ox,
            min(y1 + self.overlap, level.height) - oy,
        )


@dataclass(frozen=True)
class PyramidFacts:
    """A tile pyramid (DeepZoom, Zoomify, iipsrv's JTL tiles) and the tiles' file suffix."""

    pyramid: Pyramid
    suffix: str  # e.g. "jpeg"


@dataclass(frozen=True)
class ServiceFacts:
    """What an upstream IIIF Image service declares for one image."""

    version: Version
    level: int
    capabilities: Capabilities
    pyramid: Pyramid | None  # its tiles, when it lists any


NativeFacts = PyramidFacts | ServiceFacts

MAX_CODESTREAM_LEVELS = 32  # decomposition levels a JPEG 2000 may state (COD: at most 32)
# components of a JPEG 2000 decoded here: what Pillow renders (L, LA, RGB, RGBA); the standard
# allows 16,384, and OpenJPEG sets up each one of each tile (about 1 KB) before Pillow refuses
MAX_COMPONENTS = 4
# tiles of a JPEG 2000: those of a gigapixel image (Pillow's guard, 2**30 pixels) in 256x256
# tiles, the smallest tiles encoders write for masters. The standard allows 65,535 (tiles are
# numbered in 16 bits), and OpenJPEG sets up each one (about 9 KB, then 1 KB a component:
# measured) before decoding any: a hostile file of 1x1 tiles and a few KB took 760 MB
MAX_CODESTREAM_TILES = 1 << 14


@dataclass(frozen=True)
class Codestream:
    """A JPEG 2000 codestream's layout as its main header states it (``imaging/j2k.py``):
    the tile size and where the tile grid and the image start on the reference grid (SIZ), the
    decomposition levels (COD: how far it can be decoded reduced), the components and the most
    bits a sample of any of them, the file's size in bytes when known (what an untiled one's
    decoder reads whole) and its largest tile's compressed bytes when its tile-parts were
    walked (a file at hand: what a tiled one's decoder reads whole for a tile). What decoding
    it costs depends on it (``imaging/cost.py``)."""

    tile_width: int
    tile_height: int
    levels: int
    components: int
    depth: int
    tile_x: int = 0
    tile_y: int = 0
    image_x: int = 0
    image_y: int = 0
    nbytes: int | None = None
    tile_bytes: int | None = None  # the largest tile's compressed bytes, when they were walked

    def tiles(self, width: int, height: int) -> int:
        """Tiles of the grid over an image of ``width`` x ``height`` (the facts' size: SIZ's
        Xsiz - XOsiz by Ysiz - YOsiz), counted from where the grid starts."""
        across = -(-(self.image_x + width - self.tile_x) // self.tile_width)
        down = -(-(self.image_y + height - self.tile_y) // self.tile_height)
        return across * down


@dataclass(frozen=True)
class SourceInfo:
    """Facts about a source image, as its backend reports them (cached)."""

    width: int
    height: int
    colour: Colour = Colour.COLOR
    format: str | None = None  # the source's own format, e.g. "JPEG", when known
    mode: str | None = None  # Pillow's mode of the decoded source, when known (e.g. "RGB")
    version: str | None = None  # changes whenever the source changes (mtime, ETag)
    last_modified: float | None = None  # epoch seconds
    tiles: TileGrid | None = None  # the backend's native grid, when it has one
    native: NativeFacts | None = None  # the backend's own description
    codestream: Codestream | None = None  # a JPEG 2000's layout, when its header was read


class FactsMismatch(BackendError):
    """Facts a stage cannot work from: ``native`` of a kind other than its backend reports
    (facts another configuration left in a shared cache, say)."""

    kind = "facts_mismatch"


def checked(
    info: SourceInfo, backend: str, natives: tuple[type[Any], ...] | None = None
) -> SourceInfo:
    """``info`` if it is sane, else a 502 naming the backend (nothing else ever sees it).
    ``natives``: the types ``info.native`` may be for this backend (``type(None)`` among them
    when it may have none); ``None`` takes any. A modification time no HTTP date can state
    (before 1970, after 9999) is dropped."""
    if natives is not None and not isinstance(info.native, natives):
        raise _mismatch(backend, info.native)
    problem = _problem(info)
    if problem:
        raise BackendError(f"backend '{backend}' reported unusable image facts ({problem})")
    stamp = info.last_modified
    if stamp is not None and not 0 <= stamp < _YEAR_10000:
        return dataclasses.replace(info, last_modified=None)
    return info


def native_as(info: SourceInfo, kind: type[N], backend: str) -> N:
    """``info.native`` as the ``kind`` the backend works from; :class:`FactsMismatch` when it
    is of another."""
    if isinstance(info.native, kind):
        return info.native
    raise _mismatch(backend, info.native)


def _mismatch(backend: str, native: object) -> FactsMismatch:
    kind = type(native).__name__
    return FactsMismatch(f"backend '{backend}': facts of another backend type ({kind})")


def _problem(info: SourceInfo) -> str | None:
    if not _side(info.width) or not _side(info.height):
        return f"size {info.width}x{info.height}"
    if info.tiles is not None and (p := _grid_problem(info.tiles)):
        return p
    pyramid = None
    if isinstance(info.native, PyramidFacts):
        pyramid = info.native.pyramid
    elif isinstance(info.native, ServiceFacts):
        pyramid = info.native.pyramid
        if info.native.level not in (0, 1, 2):
            return f"compliance level {info.native.level}"
        limit = info.native.capabilities.max_size
        if limit is not None and not _side(limit):
            return f"maxWidth/maxHeight {limit}"
    if pyramid is not None and (problem := _pyramid_problem(pyramid, info.width, info.height)):
        return problem
    if info.codestream is not None:
        return _codestream_problem(info.codestream, info.width, info.height)
    if info.format == "JPEG2000":  # every backend that reads a JPEG 2000 reads its layout: facts
        # without it were kept by an earlier release (a cached entry: a miss, read again)
        return "a JPEG 2000 without its codestream's layout"
    return None


def _codestream_problem(c: Codestream, width: int, height: int) -> str | None:
    counts = (c.tile_width, c.tile_height, c.levels, c.components, c.depth)
    places = (c.tile_x, c.tile_y, c.image_x, c.image_y)
    if not all(type(v) is int for v in (*counts, *places)):
        return "JPEG 2000 layout"
    if not (1 <= c.tile_width < 1 << 32 and 1 <= c.tile_height < 1 << 32):
        return f"JPEG 2000 tile size {c.tile_width}x{c.tile_height}"
    if not 0 <= c.levels <= MAX_CODESTREAM_LEVELS:
        return f"JPEG 2000 levels {c.levels}"
    if not 1 <= c.components <= MAX_COMPONENTS:
        return f"a JPEG 2000 of {c.components} components (at most {MAX_COMPONENTS} are decoded)"
    if not 1 <= c.depth <= 38 or not all(0 <= v < 1 << 32 for v in places):
        return "JPEG 2000 layout"
    if c.tile_x > c.image_x or c.tile_y > c.image_y:
        return "JPEG 2000 layout"
    if (tiles := c.tiles(width, height)) > MAX_CODESTREAM_TILES:
        return f"a JPEG 2000 of {tiles} tiles (at most {MAX_CODESTREAM_TILES} are decoded)"
    for size in (c.nbytes, c.tile_bytes):
        if size is not None and (type(size) is not int or size < 0):
            return f"JPEG 2000 size {size}"
    return None


def _side(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_SIDE


def _grid_problem(grid: TileGrid) -> str | None:
    if not all(type(v) is int and MIN_TILE <= v <= MAX_TILE for v in (grid.width, grid.height)):
        return f"tile size {grid.width}x{grid.height}"
    factors = grid.scale_factors
    powers = all(type(f) is int and f >= 1 and f & (f - 1) == 0 for f in factors)
    ascending = all(a < b for a, b in itertools.pairwise(factors))
    if not (1 <= len(factors) <= MAX_LEVELS and factors[0] == 1 and powers and ascending):
        shown = list(factors[:8]) + (["..."] if len(factors) > 8 else [])
        return f"scale factors {shown}"
    return None


def _pyramid_problem(p: Pyramid, width: int, height: int) -> str | None:
    if (p.width, p.height) != (width, height):
        return "pyramid size differs from image size"
    if p.overlap < 0 or p.overlap >= min(p.tile_width, p.tile_height):
        return f"tile overlap {p.overlap}"
    if problem := _grid_problem(p.grid):
        return problem
    for level in p.levels:
        f = level.factor
        # each level is the full image reduced by its factor (rounded either way)
        if not (width // f <= level.width <= -(-width // f) + 1) or not (
            height // f <= level.height <= -(-height // f) + 1
        ):
            return f"level 1/{f} of {level.width}x{level.height}"
        if level.width < 1 or level.height < 1:
            return f"empty level 1/{f}"
    return None


# --- JSON, for caches shared between processes ----------------------------------------------

_KINDS: dict[str, type[Any]] = {"pyramid": PyramidFacts, "service": ServiceFacts}


def to_json(info: SourceInfo) -> dict[str, Any]:
    """``info`` as plain JSON values; :func:`from_json` reads it back."""
    out: dict[str, Any] = _encode(info)
    return out


def from_json(data: object) -> SourceInfo:
    """The facts :func:`to_json` made; ValueError when ``data`` is not such facts (a field of
    another type, a required one missing, an unknown kind or enum value)."""
    info: SourceInfo = _decode(SourceInfo, data)
    return info


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for kind, cls in _KINDS.items():
            if type(value) is cls:
                out["kind"] = kind
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset):
        return sorted(_encode(v) for v in value)
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


@functools.cache
def _fields(cls: type[Any]) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A dataclass's field types (resolved once) and fields, by name."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _decode(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) > 1:  # a union of facts kinds: the tag says which
            kind = value.get("kind") if isinstance(value, dict) else None
            if kind not in _KINDS or _KINDS[kind] not in options:
                raise ValueError(f"no facts kind {kind!r}")
            return _decode(_KINDS[kind], value)
        return _decode(options[0], value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"{hint.__name__}: not an object")
        hints, fields = _fields(hint)
        missing = [
            name
            for name, f in fields.items()
            if name not in value
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{hint.__name__}: no {', '.join(missing)}")
        return hint(**{k: _decode(hints[k], v) for k, v in value.items() if k in fields})
    if origin in (tuple, frozenset):
        if not isinstance(value, list):
            raise ValueError(f"not a list: {type(value).__name__}")
        (item,) = typing.get_args(hint)[:1]
        return origin(_decode(item, v) for v in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)  # ValueError for a value it does not have
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:  # (a bool is no int here)
        return value
    raise ValueError(f"not {getattr(hint, '__name__', hint)}: {type(value).__name__}")


__all__ = [
    "Codestream",
    "FactsMismatch",
    "Level",
    "NativeFacts",
    "Pyramid",
    "PyramidFacts",
    "ServiceFacts",
    "SourceInfo",
    "checked",
    "from_json",
    "native_as",
    "to_json",
]
