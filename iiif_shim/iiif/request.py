"""Syntax of IIIF image requests, versions 3.0 and 2.1: text in, frozen values out, no I/O.

This is phase one of the two-phase parse: it knows nothing of the image, so it checks only what
the URL itself says (number syntax, keywords, zero sizes, version-specific forms). Phase two,
``resolve.py``, checks the values against the image size and the server's limits.

Each parameter arrives already percent-decoded exactly once (``%5E`` for ``^`` is common, as
browsers encode it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from iiif_shim.base.errors import BadRequest
from iiif_shim.iiif.profile import Format, Quality, Version

# Spec 3.0 section 4.7: floats consist only of decimal digits and "." (no sign, no exponent).
_INT = r"\d+"
_FLOAT = r"(?:\d+(?:\.\d*)?|\.\d+)"
_INT_RE = re.compile(_INT)
_FLOAT_RE = re.compile(_FLOAT)
_REGION_PX_RE = re.compile(rf"({_INT}),({_INT}),({_INT}),({_INT})")
_REGION_PCT_RE = re.compile(rf"pct:({_FLOAT}),({_FLOAT}),({_FLOAT}),({_FLOAT})")
_SIZE_PCT_RE = re.compile(rf"pct:({_FLOAT})")
_SIZE_WH_RE = re.compile(rf"({_INT})?,({_INT})?")
_ROTATION_RE = re.compile(rf"(!?)({_FLOAT})")
_MAX_NUMBER_DIGITS = 12  # larger values can never be valid and only cost CPU


class RegionKind(StrEnum):
    FULL = "full"
    SQUARE = "square"
    PIXELS = "pixels"
    PERCENT = "percent"


@dataclass(frozen=True)
class RegionSpec:
    kind: RegionKind
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0


class SizeKind(StrEnum):
    MAX = "max"  # 3.0 max, 2.1 max
    FULL = "full"  # 2.1 only: the region, unscaled
    WIDTH = "w,"
    HEIGHT = ",h"
    PERCENT = "pct:n"
    EXACT = "w,h"
    CONFINED = "!w,h"


@dataclass(frozen=True)
class SizeSpec:
    kind: SizeKind
    width: int | None = None
    height: int | None = None
    percent: float | None = None
    upscale: bool = False  # the 3.0 "^" prefix
    text: str = ""  # as the client wrote it, for messages


@dataclass(frozen=True)
class RotationSpec:
    degrees: Decimal
    mirror: bool = False

    @property
    def canonical(self) -> str:
        """``!`` when mirrored, then an integer if possible, else a minimal float."""
        text = format(self.degrees.normalize(), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return ("!" if self.mirror else "") + text


@dataclass(frozen=True)
class ImageRequest:
    """A syntactically valid image request; its values still need an image to mean pixels."""

    version: Version
    identifier: str
    region: RegionSpec
    size: SizeSpec
    rotation: RotationSpec
    quality: Quality
    format: Format


def _number(text: str, parameter: str) -> float:
    if len(text) > _MAX_NUMBER_DIGITS:
        raise BadRequest(f"number {text[:20]!r}... is too long", parameter=parameter)
    return float(text)


def _integer(text: str, parameter: str) -> int:
    if len(text) > _MAX_NUMBER_DIGITS:
        raise BadRequest(f"number {text[:20]!r}... is too long", parameter=parameter)
    return int(text)


def parse_region(text: str) -> RegionSpec:
    if text == "full":
        return RegionSpec(RegionKind.FULL)
    if text == "square":
        return RegionSpec(RegionKind.SQUARE)
    values: tuple[float, ...]
    if m := _REGION_PX_RE.fullmatch(text):
        values = tuple(_integer(g, "region") for g in m.groups())
        kind = RegionKind.PIXELS
    elif m := _REGION_PCT_RE.fullmatch(text):
        values = tuple(_number(g, "region") for g in m.groups())
        if values[0] > 100 or values[1] > 100:
            raise BadRequest(f"{text!r} starts outside the image", parameter="region")
        kind = RegionKind.PERCENT
    else:
        raise BadRequest(
            f"{text!r} is not full, square, x,y,w,h or pct:x,y,w,h", parameter="region"
        )
    x, y, w, h = values
    if w == 0 or h == 0:
        raise BadRequest(f"{text!r} has zero width or height", parameter="region")
    return RegionSpec(kind, x, y, w, h)


def parse_size(text: str, version: Version) -> SizeSpec:
    body, upscale = text, False
    if text.startswith("^"):
        if version is Version.V2:
            raise BadRequest(f"{text!r}: '^' sizes exist only in Image API 3.0", parameter="size")
        body, upscale = text[1:], True
    if body == "max":
        return SizeSpec(SizeKind.MAX, upscale=upscale, text=text)
    if body == "full":
        if version is Version.V3:
            raise BadRequest("'full' is not a 3.0 size; use 'max'", parameter="size")
        return SizeSpec(SizeKind.FULL, text=text)
    if m := _SIZE_PCT_RE.fullmatch(body):
        n = _number(m.group(1), "size")
        if n == 0:
            raise BadRequest(f"{text!r} is zero", parameter="size")
        if n > 100 and version is Version.V3 and not upscale:
            raise BadRequest(f"{text!r} enlarges the region; use '^{text}'", parameter="size")
        return SizeSpec(SizeKind.PERCENT, percent=n, upscale=upscale, text=text)
    confined = body.startswith("!")
    if m := _SIZE_WH_RE.fullmatch(body[1:] if confined else body):
        ws, hs = m.groups()
        w = _integer(ws, "size") if ws is not None else None
        h = _integer(hs, "size") if hs is not None else None
        if w == 0 or h == 0:
            raise BadRequest(f"{text!r} asks for zero pixels", parameter="size")
        if confined:
            if w is None or h is None:
                raise BadRequest(f"{text!r}: '!w,h' needs both numbers", parameter="size")
            return SizeSpec(SizeKind.CONFINED, w, h, upscale=upscale, text=text)
        if w is not None and h is not None:
            return SizeSpec(SizeKind.EXACT, w, h, upscale=upscale, text=text)
        if w is not None:
            return SizeSpec(SizeKind.WIDTH, width=w, upscale=upscale, text=text)
        if h is not None:
            return SizeSpec(SizeKind.HEIGHT, height=h, upscale=upscale, text=text)
    forms = "max, ^max, w,, ,h, pct:n, w,h, !w,h (and ^ forms)"
    if version is Version.V2:
        forms = "full, max, w,, ,h, pct:n, w,h or !w,h"
    raise BadRequest(f"{text!r} is not one of {forms}", parameter="size")


def parse_rotation(text: str) -> RotationSpec:
    m = _ROTATION_RE.fullmatch(text)
    if not m or len(m.group(2)) > _MAX_NUMBER_DIGITS:
        raise BadRequest(f"{text!r} is not n or !n with 0 <= n <= 360", parameter="rotation")
    degrees = Decimal(m.group(2))
    if degrees > 360:
        raise BadRequest(f"{text!r} is more than 360 degrees", parameter="rotation")
    return RotationSpec(degrees, mirror=m.group(1) == "!")


def parse_quality_format(text: str) -> tuple[Quality, Format]:
    quality_text, dot, format_text = text.rpartition(".")
    if not dot:
        raise BadRequest(f"{text!r} is not quality.format", parameter="quality")
    try:
        quality = Quality(quality_text)
    except ValueError:
        names = ", ".join(q.value for q in Quality)
        raise BadRequest(f"{quality_text!r} is not one of {names}", parameter="quality") from None
    try:
        fmt = Format(format_text)
    except ValueError:
        names = ", ".join(f.value for f in Format)
        raise BadRequest(f"{format_text!r} is not one of {names}", parameter="format") from None
    return quality, fmt


def parse_image_request(
    version: Version, identifier: str, region: str, size: str, rotation: str, quality_format: str
) -> ImageRequest:
    """Parse the four decoded parameter segments of an image request URL."""
    quality, fmt = parse_quality_format(quality_format)
    return ImageRequest(
        version=version,
        identifier=identifier,
        region=parse_region(region),
        size=parse_size(size, version),
        rotation=parse_rotation(rotation),
        quality=quality,
        format=fmt,
    )
