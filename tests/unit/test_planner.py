"""The planner gives a backend the longest prefix of the pipeline it can do; Pillow the rest."""

from __future__ import annotations

from iiif_shim.core.planner import plan
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import Format, Quality, Version
from iiif_shim.iiif.request import parse_image_request
from iiif_shim.iiif.resolve import Box, Limits, resolve
from iiif_shim.model.plan import Capabilities, Plan, SourceRef

LIMITS = Limits(max_width=10000)
WHOLE = Capabilities()
CROP_SCALE = Capabilities(region=True, size=True)
EVERYTHING = Capabilities(
    region=True,
    size=True,
    upscale=True,
    rotation90=True,
    mirror=True,
    qualities=frozenset({Quality.GRAY, Quality.COLOR}),
    formats=frozenset({Format.JPG}),
)


def p(
    path: str, caps: Capabilities, w: int = 6000, h: int = 4000, grid: TileGrid | None = None
) -> Plan:
    region, size, rotation, qf = path.split("/")
    req = parse_image_request(Version.V3, "id", region, size, rotation, qf)
    return plan(resolve(req, w, h, LIMITS), caps, grid)


def test_whole_source_backend_leaves_everything_to_pillow() -> None:
    out = p("100,200,1000,500/500,/!90/gray.png", WHOLE)
    assert out.native.whole_source(6000, 4000)
    s = out.steps
    assert s.crop == Box(100, 200, 1000, 500)
    assert s.scale == (500, 250)
    assert (s.mirror, s.degrees, s.quality, s.format) == (True, 90.0, Quality.GRAY, Format.PNG)


def test_crop_and_scale_delegated() -> None:
    out = p("100,200,1000,500/500,/0/default.jpg", CROP_SCALE)
    assert out.native.region == Box(100, 200, 1000, 500)
    assert out.native.size == (500, 250)
    assert out.native.format is None  # nothing left but Pillow re-encodes anyway
    assert out.steps.crop is None and out.steps.scale == (500, 250)


def test_no_native_upscale_means_pillow_scales() -> None:
    out = p("0,0,100,100/^200,/0/default.jpg", CROP_SCALE)
    assert out.native.region == Box(0, 0, 100, 100) and out.native.size is None
    assert out.steps.scale == (200, 200)


def test_everything_native() -> None:
    out = p("0,0,3000,2000/300,/!90/gray.jpg", EVERYTHING)
    n = out.native
    assert (n.size, n.rotation, n.mirror, n.quality, n.format) == (
        (300, 200),
        90,
        True,
        Quality.GRAY,
        Format.JPG,
    )
    s = out.steps
    assert (s.mirror, s.degrees, s.quality) == (False, 0.0, Quality.DEFAULT)
    assert s.scale == (200, 300)  # delivered already turned


def test_arbitrary_rotation_and_what_follows_stay_in_pillow() -> None:
    out = p("full/600,/30/gray.jpg", EVERYTHING)
    assert out.native.size == (600, 400)
    assert out.native.rotation == 0 and out.native.quality is None
    assert out.steps.degrees == 30.0 and out.steps.quality is Quality.GRAY


def test_mirror_without_native_mirror_keeps_rotation_in_pillow() -> None:
    caps = Capabilities(region=True, size=True, rotation90=True)
    out = p("full/600,/!180/default.jpg", caps)
    assert out.native.rotation == 0
    assert out.steps.mirror and out.steps.degrees == 180.0


def test_bitonal_not_native_when_only_gray_is() -> None:
    out = p("full/600,/0/bitonal.jpg", EVERYTHING)
    assert out.native.quality is None and out.native.format is None
    assert out.steps.quality is Quality.BITONAL


GRID = TileGrid(256, 256, (1, 2, 4, 8, 16, 32))
PYRAMID = Capabilities(region=True, reductions=True)


def test_exact_native_tile() -> None:
    out = p("1024,2048,1024,1024/256,256/0/default.jpg", PYRAMID, grid=GRID)
    assert (out.native.reduction, out.native.tile) == (4, True)
    edge = p(
        "5120,3072,880,928/220,232/90/default.jpg",
        Capabilities(region=True, reductions=True, rotation90=True),
        grid=GRID,
    )
    assert (edge.native.reduction, edge.native.tile, edge.native.rotation) == (4, True, 90)


def test_pyramid_level_at_least_the_output() -> None:
    out = p("100,100,1000,1000/200,/0/default.jpg", PYRAMID, grid=GRID)
    assert (out.native.reduction, out.native.tile) == (4, False)  # 250px from level 1/4
    assert out.steps.crop is None and out.steps.scale == (200, 200)
    thumb = p("full/100,/0/default.jpg", PYRAMID, grid=GRID)
    assert thumb.native.reduction == 32  # capped at the pyramid's smallest level
    up = p("0,0,100,100/^200,/0/default.jpg", PYRAMID, grid=GRID)
    assert (up.native.reduction, up.native.size) == (0, None)  # full resolution, then Pillow


def test_aspect_only_sizes() -> None:
    caps = Capabilities(region=True, size_keeps_aspect=True)
    kept = p("full/600,/0/default.jpg", caps)
    assert kept.native.size == (600, 400) and kept.steps.scale == (600, 400)
    distorted = p("full/600,600/0/default.jpg", caps)
    assert distorted.native.size == (900, 600)  # covers 600x600 undistorted
    assert distorted.steps.scale == (600, 600)


def test_native_size_ceiling() -> None:
    capped = Capabilities(region=True, size=True, max_size=5000)
    out = p("full/max/0/default.jpg", capped)
    assert out.native.size == (5000, 3333) and out.steps.scale == (6000, 4000)
    with_tiles = Capabilities(region=True, size=True, max_size=5000, reductions=True)
    big = p("full/max/0/default.jpg", with_tiles, grid=GRID)
    assert (big.native.reduction, big.native.size) == (1, None)  # stitched at full resolution
    small = p("full/500,/0/default.jpg", with_tiles, grid=GRID)
    assert (small.native.size, small.native.reduction) == ((500, 333), 0)


def test_native_format_only_when_nothing_is_left() -> None:
    caps = Capabilities(region=True, size=True, formats=frozenset({Format.JPG}))
    assert p("full/500,/0/default.jpg", caps).steps.encoded
    assert not p("full/500,/0/gray.jpg", caps).steps.encoded
    assert not p("full/500,/0/default.png", caps).steps.encoded


def test_the_engine_is_part_of_the_cache_key() -> None:
    """Shims on different engines may share the disk or Redis tier: one's bytes must never
    answer for the other's."""
    resolved = resolve(
        parse_image_request(Version.V3, "x", "full", "100,", "0", "default.jpg"), 400, 300, Limits()
    )
    source = SourceRef("files", "x", "v1")
    keys = {
        plan(resolved, Capabilities(), source=source, engine=engine).key
        for engine in ("pillow", "vips 8.14.1 measured", "vips 8.14.1 all")
    }
    assert len(keys) == 3 and None not in keys
