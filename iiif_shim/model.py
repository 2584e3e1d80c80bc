"""The frozen values that pass between the stages of a request.

``URL -> ImageRequest -> Target -> SourceInfo -> ResolvedRequest -> Plan -> Fetched -> Rendered``.
Spec-level values (``ImageRequest``, ``ResolvedRequest``) live in ``iiif/``; everything the shim
adds around them lives here. Nothing here does I/O or mutates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PIL import Image

from .iiif.profile import Format, Quality
from .iiif.resolve import Box, ResolvedRequest


@dataclass(frozen=True)
class Target:
    """Where an identifier lives: the route's backend and the backend's own name for it."""

    backend: str
    native_id: str
    params: tuple[tuple[str, str], ...] = ()  # named groups of the route's match, for templates
    rights: str | None = None

    def template_values(self) -> dict[str, str]:
        return {**dict(self.params), "id": self.native_id}


class Colour(StrEnum):
    """What colour information a source has; decides the default quality."""

    COLOR = "color"
    GRAY = "gray"
    BITONAL = "bitonal"


@dataclass(frozen=True)
class TileGrid:
    """A tile grid as info.json describes it."""

    width: int
    height: int
    scale_factors: tuple[int, ...]


@dataclass(frozen=True)
class SourceInfo:
    """Facts about a source image, as its backend reports them (cached)."""

    width: int
    height: int
    colour: Colour = Colour.COLOR
    format: str | None = None  # the source's own format, e.g. "JPEG", when known
    version: str | None = None  # changes whenever the source changes (mtime, ETag)
    last_modified: float | None = None  # epoch seconds
    tiles: TileGrid | None = None  # the backend's native grid, when it has one
    native: object = None  # the backend's own frozen description (e.g. a parsed .dzi)


@dataclass(frozen=True)
class Capabilities:
    """What a backend does natively. The planner gives it the longest prefix of the IIIF
    pipeline (region, size, mirror+rotation, quality, format) that it can do; Pillow does
    the rest."""

    region: bool = False  # crop any pixel rectangle
    size: bool = False  # scale a region to any width x height (distorting too)
    size_keeps_aspect: bool = False  # scale only keeping the aspect ratio (IIIF 2.x level 1)
    upscale: bool = False  # ... sizes larger than the region
    max_size: int | None = None  # longest side the backend will scale to (iipsrv MAX_CVT)
    min_size: int = 1  # shortest output side it is asked to scale to (iipsrv crashes below)
    reductions: bool = False  # any region at 1/2^k of full size, from its tile pyramid
    rotation90: bool = False  # 90/180/270 clockwise
    mirror: bool = False
    qualities: frozenset[Quality] = frozenset()
    formats: frozenset[Format] = frozenset()

    def natively(self) -> list[str]:
        """What is native, in words, for ``check-config`` and ``probe``."""
        words = []
        if self.region:
            words.append("region")
        up_to = f" (up to {self.max_size}px)" if self.max_size else ""
        if self.size:
            words.append("size" + up_to)
        elif self.size_keeps_aspect:
            words.append("size keeping the aspect ratio" + up_to)
        if self.upscale:
            words.append("upscaling")
        if self.reductions:
            words.append("tile pyramid levels")
        if self.rotation90:
            words.append("rotation by 90s")
        if self.mirror:
            words.append("mirroring")
        if self.qualities:
            words.append("qualities " + ", ".join(sorted(q.value for q in self.qualities)))
        if self.formats:
            words.append("formats " + ", ".join(f.value for f in Format if f in self.formats))
        return words


@dataclass(frozen=True)
class NativeOp:
    """What the backend is asked for, in full-image pixels.

    ``size`` is the size the backend scales ``region`` to. ``reduction`` (a power of two, 0 for
    none) asks instead for the region at ``1/reduction`` of full size from the backend's tile
    pyramid; ``tile`` is set when that is exactly one native tile. With neither, the region is
    delivered unscaled; the whole unscaled image with nothing else is the original source.
    """

    region: Box
    size: tuple[int, int] | None = None
    reduction: int = 0
    tile: bool = False
    rotation: int = 0
    mirror: bool = False
    quality: Quality | None = None
    format: Format | None = None

    def whole_source(self, width: int, height: int) -> bool:
        return self == NativeOp(Box(0, 0, width, height))


@dataclass(frozen=True)
class PillowSteps:
    """The work left for Pillow, in order, over what the backend delivered.

    ``crop`` is in the delivered image's full-resolution pixel space (for a whole source: the
    full image), ``scale`` the exact size wanted after cropping; imaging may decode at a reduced
    resolution (JPEG draft, JPEG 2000 reduce) as long as the result is this size.
    """

    crop: Box | None
    scale: tuple[int, int]
    mirror: bool
    degrees: float  # clockwise, 0 <= d < 360
    quality: Quality
    format: Format
    encoded: bool = False  # the backend already encodes in ``format``: bytes may pass through
    jpeg_quality: int = 85


@dataclass(frozen=True)
class Plan:
    resolved: ResolvedRequest
    native: NativeOp
    steps: PillowSteps


@dataclass(frozen=True)
class Fetched:
    """What a backend delivered: a local file (opened lazily by Pillow), encoded bytes, or
    pixels it assembled itself (tiles stitched by a pyramid backend)."""

    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    described: str = ""  # for errors: which backend call produced it

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.path, self.data, self.image)) != 1:
            raise ValueError("Fetched needs exactly one of path, data or image")


@dataclass(frozen=True)
class Rendered:
    """A finished image: the body and its media type (headers come from the plan)."""

    body: bytes
    media_type: str
