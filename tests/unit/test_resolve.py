"""Phase two: pixels, limits and canonical forms, from the spec's own example tables."""

from __future__ import annotations

import pytest

from iiif_shim.base.errors import BadRequest, NotImplementedFeature
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Box, Limits, ResolvedRequest, resolve

V2, V3 = Version.V2, Version.V3
UNLIMITED = Limits()


def r(
    path: str,
    width: int = 300,
    height: int = 200,
    limits: Limits = UNLIMITED,
    version: Version = V3,
) -> ResolvedRequest:
    region, size, rotation, qf = path.split("/")
    return resolve(
        parse_image_request(version, "id", region, size, rotation, qf), width, height, limits
    )


# Spec 3.0 section 4.1, on the spec's 300x200 example image.
@pytest.mark.parametrize(
    ("region", "box"),
    [
        ("full", Box(0, 0, 300, 200)),
        ("square", Box(50, 0, 200, 200)),
        ("125,15,120,140", Box(125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", Box(125, 15, 120, 140)),
        ("125,15,200,200", Box(125, 15, 175, 185)),  # clipped at the edges
        ("pct:41.6,7.5,66.6,100", Box(125, 15, 175, 185)),
        ("pct:0,0,100,100", Box(0, 0, 300, 200)),
        ("299,199,10,10", Box(299, 199, 1, 1)),
    ],
)
def test_region_examples(region: str, box: Box) -> None:
    assert r(f"{region}/max/0/default.jpg").region == box


@pytest.mark.parametrize(
    "region", ["300,0,10,10", "0,200,10,10", "1000,1000,5,5", "pct:100,0,10,10", "pct:0,100,10,10"]
)
def test_region_outside_is_400(region: str) -> None:
    with pytest.raises(BadRequest):
        r(f"{region}/max/0/default.jpg")


# Spec 3.0 section 4.2 examples (300x200 image); ^max needs the spec reading of ^max.
@pytest.mark.parametrize(
    ("size", "limits", "expected"),
    [
        ("max", Limits(max_width=200), (200, 133)),
        ("^max", Limits(max_width=360, upscale_max_to_limits=True), (360, 240)),
        ("150,", UNLIMITED, (150, 100)),
        ("^360,", Limits(max_width=1000), (360, 240)),
        (",150", UNLIMITED, (225, 150)),
        ("^,240", Limits(max_width=1000), (360, 240)),
        ("pct:50", UNLIMITED, (150, 100)),
        ("^pct:120", Limits(max_width=1000), (360, 240)),
        ("225,100", UNLIMITED, (225, 100)),
        ("^360,360", Limits(max_width=1000), (360, 360)),
        ("!225,100", UNLIMITED, (150, 100)),
        ("^!360,360", Limits(max_width=1000), (360, 240)),
    ],
)
def test_size_examples(size: str, limits: Limits, expected: tuple[int, int]) -> None:
    got = r(f"full/{size}/0/default.jpg", limits=limits)
    assert (got.width, got.height) == expected


def test_max_applies_area_then_width_then_height() -> None:
    assert _size("full/max/0/default.jpg", 6000, 4000, Limits(max_area=6_000_000)) == (3000, 2000)
    assert _size("full/max/0/default.jpg", 6000, 4000, Limits(max_width=1000)) == (1000, 666)
    # maxHeight defaults to maxWidth
    assert _size("full/max/0/default.jpg", 4000, 6000, Limits(max_width=1000)) == (666, 1000)
    assert _size("full/max/0/default.jpg", 4000, 6000, Limits(max_width=1000, max_height=3000)) == (
        1000,
        1500,
    )


def _size(path: str, w: int, h: int, limits: Limits, version: Version = V3) -> tuple[int, int]:
    got = r(path, w, h, limits, version)
    return got.width, got.height


def test_caret_max_equals_max_by_default() -> None:
    """What the official validator expects (size_up): ^max of 1000x1000 is 1000x1000."""
    limits = Limits(12000, 12000, 100_000_000)
    assert _size("full/^max/0/default.jpg", 1000, 1000, limits) == (1000, 1000)
    assert r("full/^max/0/default.jpg", 1000, 1000, limits).canonical.split("/")[1] == "max"


@pytest.mark.parametrize("size", ["301,", ",201", "pct:100.5", "301,200", "300,201", "!2000,3000"])
def test_enlarging_without_caret_is_400_in_3(size: str) -> None:
    with pytest.raises(BadRequest) as err:
        r(f"full/{size}/0/default.jpg", limits=Limits(max_width=5000))
    assert "^" in err.value.message


def test_confined_box_past_region_can_clamp() -> None:
    limits = Limits(max_width=5000, clamp_confined=True)
    assert _size("full/!2000,3000/0/default.jpg", 1000, 1000, limits) == (1000, 1000)
    assert _size("full/!500,3000/0/default.jpg", 1000, 1000, limits) == (500, 500)


def test_caret_without_limits_is_501() -> None:
    """Upscaling is offered only when bounded by maxWidth or maxArea."""
    with pytest.raises(NotImplementedFeature):
        r("full/^pct:120/0/default.jpg")
    assert _size("full/^pct:50/0/default.jpg", 300, 200, UNLIMITED) == (150, 100)


def test_sizes_beyond_limits_are_400() -> None:
    limits = Limits(max_width=400, max_height=400, max_area=100_000)
    for size in ["^401,", "^,401", "^400,400"]:
        with pytest.raises(BadRequest):
            r(f"full/{size}/0/default.jpg", limits=limits)
    assert _size("full/^!1000,1000/0/default.jpg", 300, 200, limits) == (387, 258)


def test_output_below_one_pixel_is_400() -> None:
    with pytest.raises(BadRequest):
        r("full/pct:0.1/0/default.jpg")


def test_v2_upscales_when_bounded_and_accepts_full() -> None:
    limits = Limits(max_width=5000)
    assert _size("full/,1500/0/default.jpg", 1000, 1000, limits, V2) == (1500, 1500)
    assert _size("full/pct:150/0/default.jpg", 1000, 1000, limits, V2) == (1500, 1500)
    assert _size("full/full/0/default.jpg", 300, 200, limits, V2) == (300, 200)
    assert _size("full/max/0/default.jpg", 6000, 4000, limits, V2) == (5000, 3333)
    with pytest.raises(BadRequest):  # full is the unscaled region, and that is over the limit
        r("full/full/0/default.jpg", 6000, 4000, limits, V2)
    with pytest.raises(BadRequest):  # no limits: no sizeAboveFull
        r("full/,1500/0/default.jpg", 1000, 1000, UNLIMITED, V2)
    assert _size("full/!2000,3000/0/default.jpg", 1000, 1000, UNLIMITED, V2) == (1000, 1000)


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        # Spec 3.0 section 4.8 (6000x4000)
        ("pct:0,0,100,100/pct:50/0/default.jpg", "full/3000,2000/0/default.jpg"),
        ("square/max/0/default.jpg", "1000,0,4000,4000/max/0/default.jpg"),
        ("full/max/0/default.jpg", "full/max/0/default.jpg"),
        ("full/6000,/0/default.jpg", "full/max/0/default.jpg"),
        ("0,0,6000,4000/!3000,3000/!90.0/color.png", "full/3000,2000/!90/color.png"),
        ("10,20,30,40/^60,/22.50/gray.webp", "10,20,30,40/^60,80/22.5/gray.webp"),
        ("full/max/360/default.jpg", "full/max/0/default.jpg"),
    ],
)
def test_canonical_3(path: str, canonical: str) -> None:
    assert r(path, 6000, 4000, Limits(max_width=12000)).canonical == canonical


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("pct:0,0,100,100/pct:50/0/default.jpg", "full/3000,/0/default.jpg"),
        ("full/full/0/default.jpg", "full/full/0/default.jpg"),
        ("full/max/0/default.jpg", "full/full/0/default.jpg"),
        ("full/3000,1000/0/default.jpg", "full/3000,1000/0/default.jpg"),
        ("full/3000,2000/0/default.jpg", "full/3000,/0/default.jpg"),
        ("full/,1000/!0/bitonal.tif", "full/1500,/!0/bitonal.tif"),
    ],
)
def test_canonical_2(path: str, canonical: str) -> None:
    assert r(path, 6000, 4000, Limits(max_width=12000), V2).canonical == canonical


def test_square_of_square_image_is_full() -> None:
    assert r("square/max/0/default.jpg", 500, 500).canonical == "full/max/0/default.jpg"
    assert r("square/full/0/default.jpg", 500, 500, version=V2).canonical.startswith("full/full")
