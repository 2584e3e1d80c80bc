"""Phase two of a IIIF image request: pixels, limits and the canonical form. Pure, no I/O.

Given the image's width and height and the server's size limits, turn an :class:`ImageRequest`
into exact pixel values (region box, output size, rotation) and its canonical URI path. Every
rule about what is an error (region outside the image, upscaling without ``^`` in 3.0, sizes past
the limits) lives here.

The degraded tier of a restricted image (``Limits.degraded``) is a virtual image: the image
halved until it fits in ``max_size``, ``ceil(W/k)`` x ``ceil(H/k)`` pixels (``k`` a power of
two), each the mean of a ``k`` x ``k`` block of the image's, presented at the image's own width
and height (:class:`TierScale`, the one place of that rule). Requests are resolved as on the
image itself (a region in the image's pixels, any output size within ``maxWidth`` =
``maxHeight`` = ``max_size``: ``max`` and ``!w,h`` are confined to them, an explicit larger size
is a 400, nothing past the region's own pixels); what caps the information is where the pixels
come from: :meth:`TierScale.virtual` gives the blocks of the virtual image that cover a region,
which the planner asks of the backend at scale ``1/k`` and crops and resamples to the output.
So viewers may ask any zoom level, and a 1x1 region is the colour of the virtual pixel under
it, never the image's own pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property

from iiif_shim.base.errors import BadRequest, NotImplementedFeature
from iiif_shim.iiif.profile import Format, Quality, Version
from iiif_shim.iiif.request import ImageRequest, RegionKind, RotationSpec, SizeKind


@dataclass(frozen=True)
class TierScale:
    """The degraded tier's scale ``1/k``: ``k`` the smallest power of two that brings the
    image's longest side within ``size`` (``max_size``), so the image halved until it fits.
    Its virtual image is ``ceil(W/k)`` x ``ceil(H/k)`` pixels (between ``size/2`` and ``size``
    on its long side), each the mean of a ``k`` x ``k`` block of the image's pixels (clipped at
    the right and bottom edges). A region is always taken as whole blocks (``k`` image pixels,
    on the ``k`` grid), so the backend is always asked the same pixels for the same part of the
    virtual image (never a grid shifted by a pixel, whose difference with another would give the
    image's pixels back), at exactly scale ``1/k``: a power of two, which every pyramid and
    viewer level (OpenSeadragon's) shares."""

    size: int  # the tier's limit on a side (max_size)
    longest: int  # the image's longest side

    @cached_property
    def block(self) -> int:
        """``k``: image pixels a side of a virtual pixel covers (1: the tier is the image); its
        first scale factor (its finest level)."""
        k = 1
        while -(-self.longest // k) > self.size:
            k *= 2
        return k

    def pixels(self, full: int) -> int:
        """The virtual image's pixels along an axis of ``full`` image pixels: ``ceil(full/k)``."""
        return -(-full // self.block)

    def span(self, start: int, length: int, full: int, least: int = 1) -> tuple[int, int, int]:
        """Along one axis of ``full`` pixels, the whole blocks that cover ``length`` pixels from
        ``start``, widened by whole blocks (after, then before) until they have ``least``
        virtual pixels or the axis ends: (first image pixel, image pixels, virtual pixels)."""
        k = self.block
        ends = self.pixels(full)
        first = start // k
        last = min(ends, -(-(start + length) // k))
        while last - first < least and (first > 0 or last < ends):
            if last < ends:
                last += 1
            else:
                first -= 1
        lo, hi = first * k, min(full, last * k)
        return lo, hi - lo, last - first

    def virtual(
        self, region: Box, width: int, height: int, least: int = 1
    ) -> tuple[Box, tuple[int, int]]:
        """The part of a ``width`` x ``height`` image the virtual image's blocks over ``region``
        cover (whole image pixels; at least ``least`` virtual pixels a side where the image has
        them: a backend that will not scale to fewer), and its size in virtual pixels."""
        x, w, vw = self.span(region.x, region.w, width, least)
        y, h, vh = self.span(region.y, region.h, height, least)
        return Box(x, y, w, h), (vw, vh)


@dataclass(frozen=True)
class Limits:
    """Server-imposed output limits (``None`` = no limit), and how the two readings the spec and
    the official validator disagree on are settled (see docs/image-api.md, "Spec gaps")."""

    max_width: int | None = None
    max_height: int | None = None
    max_area: int | None = None
    # 3.0 "^max": enlarge to the limits (spec example) or stay at "max" (validator, default).
    upscale_max_to_limits: bool = False
    # 3.0 "!w,h" whose box is larger than the region: 400 (validator, default) or the region.
    clamp_confined: bool = False
    # The degraded tier's virtual image (the image halved until it fits max_size); None: none.
    tier_scale: TierScale | None = None

    def degraded(self, max_size: int, width: int, height: int) -> Limits:
        """These limits for the degraded tier of a ``width`` x ``height`` image: no output side
        past ``max_size``, its pixels those of the virtual image (:class:`TierScale`)."""
        mh = self.effective_max_height
        longest = max(width, height)
        return Limits(
            max_width=max_size if self.max_width is None else min(self.max_width, max_size),
            max_height=max_size if mh is None else min(mh, max_size),
            max_area=self.max_area,
            upscale_max_to_limits=self.upscale_max_to_limits,
            clamp_confined=self.clamp_confined,
            tier_scale=TierScale(max_size, longest),
        )

    @property
    def effective_max_height(self) -> int | None:
        # Spec: a missing maxHeight defaults to maxWidth.
        return self.max_height if self.max_height is not None else self.max_width

    @property
    def allows_upscaling(self) -> bool:
        """Upscaling is offered only when it is bounded (3.0: sizeUpscaling needs maxWidth/Area),
        and never in the degraded tier (whose every pixel is already a virtual one)."""
        if self.tier_scale is not None:
            return False
        return self.max_width is not None or self.max_area is not None

    def fits(self, w: int, h: int) -> bool:
        mh = self.effective_max_height
        return (
            (self.max_width is None or w <= self.max_width)
            and (mh is None or h <= mh)
            and (self.max_area is None or w * h <= self.max_area)
        )


@dataclass(frozen=True)
class Box:
    """A rectangle in full-image pixels."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class ResolvedRequest:
    """An image request in exact pixels, ready for planning."""

    request: ImageRequest
    image_width: int
    image_height: int
    region: Box
    width: int  # output size after region and size, before rotation
    height: int
    rotation: RotationSpec
    quality: Quality
    format: Format
    canonical: str  # "region/size/rotation/quality.format"

    @property
    def degrees(self) -> float:
        """Clockwise rotation in degrees, 0 <= d < 360."""
        return float(self.rotation.degrees % 360)


def _round(value: float) -> int:
    """Round half up (spec: rounding is implementation-defined; this matches common servers)."""
    return math.floor(value + 0.5)


def height_for_width(w: int, full_w: int, full_h: int) -> int:
    """The height that keeps the aspect ratio of ``full_w`` x ``full_h`` at width ``w``."""
    return max(1, _round(full_h * w / full_w))


def width_for_height(h: int, full_w: int, full_h: int) -> int:
    return max(1, _round(full_w * h / full_h))


def resolve_region(req: ImageRequest, width: int, height: int) -> Box:
    r = req.region
    if r.kind is RegionKind.FULL:
        return Box(0, 0, width, height)
    if r.kind is RegionKind.SQUARE:
        side = min(width, height)
        return Box((width - side) // 2, (height - side) // 2, side, side)
    if r.kind is RegionKind.PIXELS:
        x, y, w, h = int(r.x), int(r.y), int(r.w), int(r.h)
    else:
        fx, fy = r.x * width / 100, r.y * height / 100
        if fx >= width or fy >= height:
            raise BadRequest("the region lies outside the image", parameter="region")
        x, y = min(_round(fx), width - 1), min(_round(fy), height - 1)
        w = max(1, _round(r.w * width / 100))
        h = max(1, _round(r.h * height / 100))
    if x >= width or y >= height:
        raise BadRequest(
            f"the region starts outside the {width}x{height} image", parameter="region"
        )
    return Box(x, y, min(w, width - x), min(h, height - y))


def rotated_size(width: int, height: int, degrees: float) -> tuple[int, int]:
    """The tight bounding box of a ``width`` x ``height`` image turned by ``degrees``:
    ``|w cos t| + |h sin t|`` by ``|h cos t| + |w sin t|``, rounded half up (float noise
    snapped first), so multiples of 90 swap the sides exactly."""
    quarter = degrees % 360
    if quarter % 90 == 0:
        return (height, width) if quarter in (90, 270) else (width, height)
    t = math.radians(quarter)
    cos, sin = abs(math.cos(t)), abs(math.sin(t))
    w = math.floor(round(width * cos + height * sin, 6) + 0.5)
    h = math.floor(round(height * cos + width * sin, 6) + 0.5)
    return max(1, w), max(1, h)


def confine(rw: int, rh: int, scale: float, limits: Limits) -> tuple[int, int]:
    """The largest size at most ``scale`` times the region that fits the limits.

    Follows the spec's implementation note: maxArea, then maxWidth, then maxHeight, each
    computed from the region's dimensions so rounding does not accumulate.
    """
    scale = min(scale, _limit_scale(rw, rh, limits))
    if scale == 1 or math.isinf(scale):  # unscaled, or unbounded upscaling (no limits at all)
        return rw, rh
    w, h = max(1, math.floor(rw * scale + 1e-9)), max(1, math.floor(rh * scale + 1e-9))
    return w, h


def _limit_scale(rw: int, rh: int, limits: Limits) -> float:
    scale = math.inf
    if limits.max_area is not None:
        scale = min(scale, math.sqrt(limits.max_area / (rw * rh)))
    if limits.max_width is not None:
        scale = min(scale, limits.max_width / rw)
    mh = limits.effective_max_height
    if mh is not None:
        scale = min(scale, mh / rh)
    return scale


def resolve_size(req: ImageRequest, region: Box, limits: Limits) -> tuple[int, int]:
    """Output width and height for the request's size over ``region``."""
    s = req.size
    rw, rh = region.w, region.h
    v3 = req.version is Version.V3
    may_enlarge = s.upscale if v3 else True  # 2.1: sizeAboveFull, bounded by the limits
    confined_to_limits = False

    if s.kind is SizeKind.MAX:
        # ^max with no limits declared equals max (confine returns the region size).
        enlarge = s.upscale and limits.upscale_max_to_limits
        w, h = confine(rw, rh, math.inf if enlarge else 1.0, limits)
        confined_to_limits = True
    elif s.kind is SizeKind.FULL:
        w, h = rw, rh
    elif s.kind is SizeKind.WIDTH:
        assert s.width is not None
        w, h = s.width, height_for_width(s.width, rw, rh)
    elif s.kind is SizeKind.HEIGHT:
        assert s.height is not None
        w, h = width_for_height(s.height, rw, rh), s.height
    elif s.kind is SizeKind.PERCENT:
        assert s.percent is not None
        w, h = _round(rw * s.percent / 100), _round(rh * s.percent / 100)
        if w < 1 or h < 1:
            raise BadRequest(
                f"pct:{s.percent:g} of a {rw}x{rh} region is less than one pixel",
                parameter="size",
            )
    elif s.kind is SizeKind.EXACT:
        assert s.width is not None and s.height is not None
        w, h = s.width, s.height
    else:  # CONFINED
        assert s.width is not None and s.height is not None
        if s.width / rw <= s.height / rh:
            w, h = s.width, min(s.height, height_for_width(s.width, rw, rh))
        else:
            w, h = min(s.width, width_for_height(s.height, rw, rh)), s.height
        # "not larger than the region": 3.0 when configured so; 2.1 without sizeAboveFull.
        # Otherwise a 3.0 box past the region is an upscale and falls to the 400 below.
        clamp = limits.clamp_confined if v3 else not limits.allows_upscaling
        if (w > rw or h > rh) and not s.upscale and clamp:
            w, h = rw, rh
        if not limits.fits(w, h):
            w, h = confine(rw, rh, min(w / rw, h / rh), limits)
        confined_to_limits = True

    enlarges = w > rw or h > rh
    if enlarges and not may_enlarge:
        raise BadRequest(
            f"{s.text!r} is larger than the {rw}x{rh} region; ask for '^{s.text}' to upscale",
            parameter="size",
        )
    if enlarges and not limits.allows_upscaling:
        if v3:
            raise NotImplementedFeature(
                f"{s.text!r} is larger than the {rw}x{rh} region: the degraded tier does not "
                "upscale"
                if limits.tier_scale is not None
                else "upscaling is not offered (no max_width or max_area is configured)",
                parameter="size",
            )
        raise BadRequest(f"{s.text!r} is larger than the {rw}x{rh} region", parameter="size")
    if not confined_to_limits and not limits.fits(w, h):
        raise BadRequest(f"{w}x{h} is larger than this server's limits", parameter="size")
    return w, h


def canonical_size(version: Version, region: Box, w: int, h: int, limits: Limits) -> str:
    rw, rh = region.w, region.h
    if version is Version.V2:
        if (w, h) == (rw, rh):
            return "full"
        if h == height_for_width(w, rw, rh):
            return f"{w},"
        return f"{w},{h}"
    if (w, h) == confine(rw, rh, 1.0, limits):
        return "max"
    enlarged = w > rw or h > rh
    if enlarged and limits.upscale_max_to_limits and (w, h) == confine(rw, rh, math.inf, limits):
        return "^max"
    return f"^{w},{h}" if enlarged else f"{w},{h}"


def resolve(req: ImageRequest, width: int, height: int, limits: Limits) -> ResolvedRequest:
    """Resolve ``req`` against a ``width`` x ``height`` image."""
    region = resolve_region(req, width, height)
    w, h = resolve_size(req, region, limits)
    full = region == Box(0, 0, width, height)
    region_text = "full" if full else f"{region.x},{region.y},{region.w},{region.h}"
    rotation = req.rotation
    if rotation.degrees == Decimal(360):
        rotation = RotationSpec(Decimal(0), rotation.mirror)
    turned_w, turned_h = rotated_size(w, h, float(rotation.degrees))
    if limits.max_area is not None and turned_w * turned_h > limits.max_area:
        raise BadRequest(
            f"turned by {rotation.canonical.lstrip('!')} degrees the {w}x{h} output becomes "
            f"{turned_w}x{turned_h}, more than this server's limit of {limits.max_area} pixels",
            parameter="rotation",
        )
    canonical = "/".join(
        (
            region_text,
            canonical_size(req.version, region, w, h, limits),
            rotation.canonical,
            f"{req.quality.value}.{req.format.value}",
        )
    )
    return ResolvedRequest(
        request=req,
        image_width=width,
        image_height=height,
        region=region,
        width=w,
        height=h,
        rotation=rotation,
        quality=req.quality,
        format=req.format,
        canonical=canonical,
    )
