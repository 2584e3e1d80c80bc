"""Phase one: syntax of region, size, rotation, quality and format, both versions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from iiif_shim.base.errors import BadRequest
from iiif_shim.iiif.profile import Format, Quality, Version
from iiif_shim.iiif.request import (
    RegionKind,
    RegionSpec,
    SizeKind,
    parse_image_request,
    parse_quality_format,
    parse_region,
    parse_rotation,
    parse_size,
)

V2, V3 = Version.V2, Version.V3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("full", RegionSpec(RegionKind.FULL)),
        ("square", RegionSpec(RegionKind.SQUARE)),
        ("125,15,120,140", RegionSpec(RegionKind.PIXELS, 125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", RegionSpec(RegionKind.PERCENT, 41.6, 7.5, 40, 70)),
        ("pct:0,0,100,100", RegionSpec(RegionKind.PERCENT, 0, 0, 100, 100)),
        ("pct:0.5,.5,1.,10", RegionSpec(RegionKind.PERCENT, 0.5, 0.5, 1.0, 10)),
    ],
)
def test_region_forms(text: str, expected: RegionSpec) -> None:
    assert parse_region(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Full",
        "0,0,10",
        "0,0,10,10,10",
        "-1,0,10,10",
        "0,0,0,10",
        "0,0,10,0",
        "pct:0,0,0,10",
        "pct:+1,0,10,10",
        "pct:1e2,0,1,1",
        "1_0,0,5,5",
        "pct:101,0,5,5",
        "0x0,0,10,10",
        "nan,0,1,1",
        "pct:inf,0,1,1",
        "12345678901234,0,1,1",
    ],
)
def test_region_errors(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_region(text)
    assert err.value.parameter == "region"


@pytest.mark.parametrize(
    ("text", "version", "kind", "w", "h", "pct", "up"),
    [
        ("max", V3, SizeKind.MAX, None, None, None, False),
        ("^max", V3, SizeKind.MAX, None, None, None, True),
        ("150,", V3, SizeKind.WIDTH, 150, None, None, False),
        ("^360,", V3, SizeKind.WIDTH, 360, None, None, True),
        (",150", V3, SizeKind.HEIGHT, None, 150, None, False),
        ("^,240", V3, SizeKind.HEIGHT, None, 240, None, True),
        ("pct:50", V3, SizeKind.PERCENT, None, None, 50, False),
        ("^pct:120", V3, SizeKind.PERCENT, None, None, 120, True),
        ("225,100", V3, SizeKind.EXACT, 225, 100, None, False),
        ("^360,360", V3, SizeKind.EXACT, 360, 360, None, True),
        ("!225,100", V3, SizeKind.CONFINED, 225, 100, None, False),
        ("^!360,360", V3, SizeKind.CONFINED, 360, 360, None, True),
        ("full", V2, SizeKind.FULL, None, None, None, False),
        ("max", V2, SizeKind.MAX, None, None, None, False),
        ("150,", V2, SizeKind.WIDTH, 150, None, None, False),
        ("pct:150", V2, SizeKind.PERCENT, None, None, 150, False),
        ("!225,100", V2, SizeKind.CONFINED, 225, 100, None, False),
    ],
)
def test_size_forms(
    text: str,
    version: Version,
    kind: SizeKind,
    w: int | None,
    h: int | None,
    pct: float | None,
    up: bool,
) -> None:
    size = parse_size(text, version)
    assert (size.kind, size.width, size.height, size.percent, size.upscale) == (kind, w, h, pct, up)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("full", V3),  # 3.0 has only max (validator size_nofull)
        ("^max", V2),
        ("^100,", V2),  # ^ exists only in 3.0
        ("pct:120", V3),  # enlargement without ^
        ("0,", V3),
        (",0", V3),
        ("0,0", V3),
        ("pct:0", V3),
        ("!0,10", V3),
        (",", V3),
        ("!100,", V3),
        ("!,100", V3),
        ("^", V3),
        ("^^max", V3),
        ("100.5,", V3),
        ("-100,", V3),
        ("1e3,", V3),
        ("Max", V3),
        ("pct:", V3),
        ("", V2),
    ],
)
def test_size_errors(text: str, version: Version) -> None:
    with pytest.raises(BadRequest) as err:
        parse_size(text, version)
    assert err.value.parameter == "size"


@pytest.mark.parametrize(
    ("text", "degrees", "mirror", "canonical"),
    [
        ("0", "0", False, "0"),
        ("90", "90", False, "90"),
        ("!0", "0", True, "!0"),
        ("!345", "345", True, "!345"),
        ("22.5", "22.5", False, "22.5"),
        ("22.50", "22.5", False, "22.5"),
        ("90.0", "90", False, "90"),
        (".5", "0.5", False, "0.5"),
        ("360", "360", False, "360"),
        ("007", "7", False, "7"),
    ],
)
def test_rotation(text: str, degrees: str, mirror: bool, canonical: str) -> None:
    rotation = parse_rotation(text)
    assert rotation.degrees == Decimal(degrees)
    assert rotation.mirror is mirror
    assert rotation.canonical == canonical


@pytest.mark.parametrize(
    "text", ["", "!", "-90", "361", "+90", "1e2", "1_0", "90!", "!!90", "nan", "ninety"]
)
def test_rotation_errors(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_rotation(text)


def test_quality_and_format() -> None:
    assert parse_quality_format("default.jpg") == (Quality.DEFAULT, Format.JPG)
    assert parse_quality_format("gray.webp") == (Quality.GRAY, Format.WEBP)
    for bad, parameter in [
        ("grey.jpg", "quality"),
        ("default.jpeg", "format"),
        ("default", "quality"),
        ("Default.jpg", "quality"),
        ("default.JPG", "format"),
        ("color.png.jpg", "quality"),
    ]:
        with pytest.raises(BadRequest) as err:
            parse_quality_format(bad)
        assert err.value.parameter == parameter, bad


def test_spec_order_example() -> None:
    """Spec 3.0 section 4.6: .../125,15,120,140/90,/!345/gray.jpg"""
    req = parse_image_request(V3, "x", "125,15,120,140", "90,", "!345", "gray.jpg")
    assert req.region == RegionSpec(RegionKind.PIXELS, 125, 15, 120, 140)
    assert (req.size.kind, req.size.width) == (SizeKind.WIDTH, 90)
    assert req.rotation.mirror and req.rotation.degrees == 345
    assert (req.quality, req.format) == (Quality.GRAY, Format.JPG)
