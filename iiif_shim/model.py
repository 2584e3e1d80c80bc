"""The frozen values that pass between the stages of a request.

``URL -> ImageRequest -> Target -> SourceInfo -> ResolvedRequest -> Plan -> Fetched -> Rendered``.
Spec-level values (``ImageRequest``, ``ResolvedRequest``) live in ``iiif/``; everything the shim
adds around them lives here. Nothing here does I/O or mutates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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


@dataclass(frozen=True)
class Capabilities:
    """What a backend does natively. The planner gives it the longest prefix of the IIIF
    pipeline (region, size, mirror+rotation, quality, format) that it can do; Pillow does
    the rest."""

    region: bool = False  # crop any pixel rectangle
    size: bool = False  # scale a region to any width x height
    upscale: bool = False  # ... including larger than the region
    rotation90: bool = False  # 90/180/270 clockwise
    mirror: bool = False
    qualities: frozenset[Quality] = frozenset()
    formats: frozenset[Format] = frozenset()

    def describe(self) -> dict[str, bool | list[str]]:
        return {
            "region": self.region,
            "size": self.size,
            "upscale": self.upscale,
            "rotation90": self.rotation90,
            "mirror": self.mirror,
            "qualities": sorted(q.value for q in self.qualities),
            "formats": sorted(f.value for f in self.formats),
        }


@dataclass(frozen=True)
class NativeOp:
    """What the backend is asked for. ``region`` in full-image pixels; ``size`` is the size
    the backend scales it to (``None``: unscaled). ``whole_source`` means the original bytes."""

    region: Box
    size: tuple[int, int] | None = None
    rotation: int = 0
    mirror: bool = False
    quality: Quality | None = None
    format: Format | None = None

    def whole_source(self, width: int, height: int) -> bool:
        return (
            self.region == Box(0, 0, width, height)
            and self.size is None
            and self.rotation == 0
            and not self.mirror
            and self.quality is None
            and self.format is None
        )


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
    jpeg_quality: int = 85


@dataclass(frozen=True)
class Plan:
    resolved: ResolvedRequest
    native: NativeOp
    steps: PillowSteps


@dataclass(frozen=True)
class Fetched:
    """What a backend delivered: a local file (opened lazily by Pillow) or bytes in memory."""

    path: Path | None = None
    data: bytes | None = None
    described: str = ""  # for errors: which backend call produced it

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("Fetched needs exactly one of path or data")


@dataclass(frozen=True)
class Rendered:
    """A finished image: the body and its media type (headers come from the plan)."""

    body: bytes
    media_type: str
