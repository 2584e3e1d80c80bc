"""The frozen values that pass between the stages of a request.

``URL -> ImageRequest -> Target -> SourceInfo -> ResolvedRequest -> Plan -> Fetched -> Rendered``.
Spec-level values (``ImageRequest``, ``ResolvedRequest``) live in ``iiif/``, a backend's facts
about a source (``SourceInfo``) in ``facts.py``; everything else the shim adds around them lives
here, including the derivative cache key, which is derived from the plan alone. Nothing here does
I/O or mutates.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.iiif.resolve import Box, ResolvedRequest


@dataclass(frozen=True)
class Target:
    """Where an identifier lives: the route's backend and the backend's own name for it."""

    backend: str
    native_id: str
    params: tuple[tuple[str, str], ...] = ()  # named groups of the route's match, for templates
    rights: str | None = None
    access: str | None = None  # the route's access policy (``auth.policies``), None: public

    def template_values(self) -> dict[str, str]:
        return {**dict(self.params), "id": self.native_id}


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

    def delivered_size(self) -> tuple[int, int]:
        """The size of what the backend is asked to deliver (turned, when it turns it)."""
        r = self.region
        if self.reduction:
            w, h = math.ceil(r.w / self.reduction), math.ceil(r.h / self.reduction)
        else:
            w, h = self.size or (r.w, r.h)
        return (h, w) if self.rotation in (90, 270) else (w, h)


@dataclass(frozen=True)
class Steps:
    """The work left for the image engine, in order, over what the backend delivered.

    ``crop`` is in the delivered image's full-resolution pixel space (for a whole source: the
    full image), ``scale`` the exact size wanted after cropping; imaging may decode at a reduced
    resolution (JPEG draft, JPEG 2000 reduce) as long as the result is this size. The degraded
    tier sets ``virtual``: the size the whole delivered image is brought to first (nothing to do
    when the backend delivered it so), its pixels those of the tier's virtual image (each the
    mean of a ``block`` x ``block`` square of image pixels, clipped at the image's right and
    bottom edges), the crop and scale then made from those pixels alone, never from finer ones;
    and ``frame``: the image pixels the delivered image covers (the native region, on the
    ``block`` grid), the space of ``crop``.
    """

    crop: Box | None
    scale: tuple[int, int]
    mirror: bool
    degrees: float  # clockwise, 0 <= d < 360
    quality: Quality
    format: Format
    encoded: bool = False  # the backend already encodes in ``format``: bytes may pass through
    jpeg_quality: int = 85
    engine: str = "pillow"  # the image engine doing these steps (``Engine.identity``)
    virtual: tuple[int, int] | None = None
    frame: tuple[int, int] | None = None
    block: int = 1  # image pixels a side of a virtual pixel covers (a power of two)

    @property
    def no_pixel_work(self) -> bool:
        """Whether the steps leave the pixels as delivered (size and format apart)."""
        return (
            self.crop is None
            and self.virtual in (None, self.scale)
            and not self.mirror
            and self.degrees == 0
            and self.quality is Quality.DEFAULT
        )


# Bumped whenever the shim renders the same plan into different bytes (a cache of derivatives
# made by an older release must not answer for a newer one).
RENDER_VERSION = 1


@dataclass(frozen=True)
class SourceRef:
    """Which source a plan is for: the backend, its native identifier, and the source's version
    (``None`` when nothing tells a changed source; then nothing is cached or tagged)."""

    backend: str
    native_id: str
    version: str | None


@dataclass(frozen=True)
class Plan:
    source: SourceRef
    resolved: ResolvedRequest
    native: NativeOp
    steps: Steps
    tier: str | None = None  # the degraded tier of a restricted image; None: the image itself

    @cached_property
    def key(self) -> str | None:
        """The derivative cache key: a hash of everything that changes the output bytes (the
        source and its version, what the backend is asked for, every step left to the engine
        with its settings and the engine with its library versions, the renderer's version),
        and the tier (a degraded tier's entries are never the image's own, nor the other way
        round), nothing else. ``None`` for unversioned sources."""
        if self.source.version is None:
            return None
        parts: tuple[object, ...] = (RENDER_VERSION, self.source, self.native, self.steps)
        if self.tier is not None:
            parts += (self.tier,)
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    @property
    def etag(self) -> str | None:
        key = self.key
        return None if key is None else f'"{key[:32]}"'


@dataclass(frozen=True)
class Rendered:
    """A finished image: the body and its media type (headers come from the plan)."""

    body: bytes
    media_type: str
