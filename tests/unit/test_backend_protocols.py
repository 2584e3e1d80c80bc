"""Each legacy protocol's arithmetic and parsing, against what the real servers were seen doing.

The numbers come from pyramids libvips wrote, replies iipsrv gave and URLs Thumbor accepted
(the end-to-end behaviour against those servers is in tests/contract/ and tests/validator/).
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from iiif_shim.backends.deepzoom import DeepZoomBackend, parse_dzi
from iiif_shim.backends.iiif import read_service, request_path
from iiif_shim.backends.iip import IipBackend, parse_obj
from iiif_shim.backends.registry import BACKEND_TYPES
from iiif_shim.backends.settings import (
    BACKEND_SETTINGS,
    Extract,
    IipSettings,
    TemplateImage,
    ThumborSettings,
)
from iiif_shim.backends.thumbor import ThumborBackend, sign
from iiif_shim.backends.zoomify import ZoomifyBackend, parse_properties
from iiif_shim.iiif.profile import Format, Quality, Version
from iiif_shim.iiif.resolve import Box
from iiif_shim.model.facts import Level, Pyramid, PyramidFacts, ServiceFacts, SourceInfo
from iiif_shim.model.plan import NativeOp, Target
from iiif_shim.upstream.urltemplate import UrlTemplate
from tests.shims import BACKEND_NAMES, CONTRACT_SHIMS

# exactly as libvips 8.14 writes it (note the space after "<Size")
DZI = "\n".join(
    [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008"',
        '  Format="jpeg"',
        '  Overlap="1"',
        '  TileSize="254"',
        "  >",
        "  <Size ",
        '    Height="777"',
        '    Width="1001"',
        "  />",
        "</Image>",
        "",
    ]
)


def test_deepzoom_levels_and_tiles() -> None:
    assert parse_dzi(DZI) == (1001, 777, 254, 1, "jpeg")
    p = Pyramid.halving(1001, 777, 254, 254, overlap=1)
    # libvips: each level halves, rounding up (1001x777, 501x389, 251x195, ...)
    assert [(lv.width, lv.height) for lv in p.levels] == [(1001, 777), (501, 389), (251, 195)]
    facts = PyramidFacts(p, "jpeg")
    backend = object.__new__(DeepZoomBackend)
    backend.urls = {"url": UrlTemplate.parse("http://h/{id}.dzi")}
    base = backend.tile_base(Target("dz", "x"))
    assert base == "http://h/x_files"
    assert backend.tile_url(base, facts, p.levels[0], 3, 2) == "http://h/x_files/10/3_2.jpeg"
    assert backend.tile_url(base, facts, p.levels[2], 0, 0) == "http://h/x_files/8/0_0.jpeg"
    # a tile image starts one overlap pixel early, except at the image's edge
    assert p.tile_origin(0, 0) == (0, 0) and p.tile_origin(1, 2) == (253, 507)
    assert p.cell(p.levels[0], 3, 3) == (762, 762, 1001, 777)


def test_level_window_is_exact_for_halved_pyramids() -> None:
    p = Pyramid.halving(6000, 4000, 256, 256)
    level = p.level(8)
    assert (level.factor, level.width, level.height) == (8, 750, 500)
    assert p.window(Box(2048, 1024, 3952, 2976), level) == (256, 128, 750, 500)
    assert p.level(64).factor == 32  # nothing coarser than the single-tile level (188x125)
    assert p.grid.scale_factors == (1, 2, 4, 8, 16, 32)


def test_zoomify_tiers_and_tile_groups() -> None:
    text = (
        '<IMAGE_PROPERTIES WIDTH="6000" HEIGHT="4000" NUMTILES="513" NUMIMAGES="1" '
        'VERSION="1.8" TILESIZE="256" />\n'
    )
    assert parse_properties(text) == (6000, 4000, 256, 513)
    p = Pyramid.halving(6000, 4000, 256, 256)
    assert sum(p.columns(lv) * p.rows(lv) for lv in p.levels) == 513
    source = PyramidFacts(p, "jpg")
    backend = object.__new__(ZoomifyBackend)
    full, tier4 = p.levels[0], p.levels[1]
    # what libvips wrote: index 255 is the last of group 0, 256 starts group 1, 512 is group 2
    assert backend.tile_url("http://h/z", source, full, 6, 5) == "http://h/z/TileGroup0/5-6-5.jpg"
    assert backend.tile_url("http://h/z", source, full, 7, 5) == "http://h/z/TileGroup1/5-7-5.jpg"
    assert (
        backend.tile_url("http://h/z", source, full, 23, 15) == "http://h/z/TileGroup2/5-23-15.jpg"
    )
    assert (
        backend.tile_url("http://h/z", source, tier4, 11, 7) == "http://h/z/TileGroup0/4-11-7.jpg"
    )
    assert (
        backend.tile_url("http://h/z", source, p.levels[-1], 0, 0)
        == "http://h/z/TileGroup0/0-0-0.jpg"
    )


def test_iip_metadata_and_tiles() -> None:
    reply = (
        b"IIP:1.0\r\nMax-size:6000 4000\r\nTile-size:256 256\r\nResolution-number:6\r\n"
        b"Resolutions:187 125,375 250,750 500,1500 1000,3000 2000,6000 4000\r\n"
        b"Colorspace,0-5,0:0 0 3 3 0 1 2\r\n"
    ).decode()
    obj = parse_obj("\r\n" + reply)
    assert obj["Max-size"] == "6000 4000" and obj["Colorspace,0-5,0"] == "0 0 3 3 0 1 2"
    sizes = [(187, 125), (375, 250), (750, 500), (1500, 1000), (3000, 2000), (6000, 4000)]
    levels = tuple(Level(1 << i, w, h) for i, (w, h) in enumerate(reversed(sizes)))
    p = Pyramid(6000, 4000, 256, 256, levels)
    facts = PyramidFacts(p, "jpg")
    settings = IipSettings(type="iip", url="http://h/fcgi-bin/iipsrv.fcgi", path="{id}.tif")
    backend = IipBackend("iip", settings)
    backend.urls = settings.templates()
    fif = backend.tile_base(Target("iip", "chart"))
    # resolution 0 is the smallest; tiles are numbered row by row
    assert backend.tile_url(fif, facts, p.level(4), 2, 1) == (
        "http://h/fcgi-bin/iipsrv.fcgi?FIF=chart.tif&JTL=3,8"
    )
    assert backend.tile_url(fif, facts, p.level(1), 0, 0).endswith("JTL=5,0")


IIPSRV_INFO = {
    "@context": "http://iiif.io/api/image/2/context.json",
    "@id": "http://internal:8080/iiif/chart.tif",
    "protocol": "http://iiif.io/api/image",
    "width": 6000,
    "height": 4000,
    "tiles": [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4, 8, 16, 32]}],
    "profile": [
        "http://iiif.io/api/image/2/level1.json",
        {
            "formats": ["jpg"],
            "qualities": ["native", "color", "gray", "bitonal"],
            "supports": [
                "regionByPct",
                "regionSquare",
                "sizeByForcedWh",
                "sizeByWh",
                "sizeAboveFull",
                "rotationBy90s",
                "mirroring",
            ],
            "maxWidth": 5000,
            "maxHeight": 5000,
        },
    ],
}


def test_upstream_iiif_2_level1() -> None:
    info = read_service(IIPSRV_INFO)
    service = info.native
    assert isinstance(service, ServiceFacts)
    caps = service.capabilities
    assert (service.version, service.level, info.width, info.height) == (Version.V2, 1, 6000, 4000)
    assert caps.region and caps.size and caps.size_keeps_aspect and caps.upscale
    assert caps.rotation90 and caps.mirror and caps.max_size == 5000
    assert caps.qualities == {Quality.COLOR, Quality.GRAY, Quality.BITONAL}
    assert caps.formats == {Format.JPG}
    op = NativeOp(
        Box(0, 0, 3000, 2000), size=(300, 200), rotation=90, mirror=True, quality=Quality.GRAY
    )
    base = "http://h/iiif/chart.tif"
    assert request_path(base, service, op, info) == (
        "http://h/iiif/chart.tif/0,0,3000,2000/300,200/!90/gray.jpg"
    )
    whole = NativeOp(Box(0, 0, 6000, 4000))
    assert request_path(base, service, whole, info).endswith("/full/full/0/default.jpg")


def test_upstream_iiif_3_and_level0() -> None:
    doc = {
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": "x",
        "width": 300,
        "height": 200,
        "profile": "level2",
        "extraFormats": ["webp"],
        "extraFeatures": ["sizeUpscaling"],
        "maxWidth": 1000,
    }
    service = read_service(doc).native
    assert isinstance(service, ServiceFacts)
    assert service.capabilities.size and service.capabilities.upscale
    assert service.capabilities.formats == {Format.JPG, Format.PNG, Format.WEBP}
    up = NativeOp(Box(0, 0, 300, 200), size=(600, 400))
    path = request_path("http://h/s", service, up, SourceInfo(300, 200))
    assert path.endswith("/full/^600,400/0/default.jpg")
    static = {
        "@context": "http://iiif.io/api/image/2/context.json",
        "width": 1000,
        "height": 700,
        "profile": ["http://iiif.io/api/image/2/level0.json"],
        "tiles": [{"width": 512, "scaleFactors": [1, 2]}],
    }
    service = read_service(static).native
    assert isinstance(service, ServiceFacts)
    assert service.pyramid is not None and service.capabilities.reductions
    assert [(lv.width, lv.height) for lv in service.pyramid.levels] == [(1000, 700), (500, 350)]
    with pytest.raises(ValueError):
        read_service(
            {"@context": "http://iiif.io/api/image/1/context.json", "width": 1, "height": 1}
        )


def test_template_extracts() -> None:
    assert Extract(json="width").find('{"width": "6000", "height": "4000"}') == 6000
    assert Extract(json="a.b.1").find('{"a": {"b": [5, 7]}}') == 7
    assert Extract(xml="Size/@Width").find(DZI) == 1001
    props = '<IMAGE_PROPERTIES WIDTH="6000" HEIGHT="4000" TILESIZE="256" />'
    assert Extract(xml="IMAGE_PROPERTIES/@HEIGHT").find(props) == 4000
    assert Extract(regex=r"Max-size:\d+ (\d+)").find("IIP:1.0\r\nMax-size:6000 4000\r\n") == 4000
    with pytest.raises(ValueError):
        Extract(json="width").find('{"width": "0"}')
    assert Extract().findings() and Extract(json="a", regex="(x)").findings()
    assert Extract(regex="no group").findings()


def test_template_image_checks() -> None:
    ok = TemplateImage(
        url="http://h/i?r={x},{y},{w},{h}&s={width},{height}", region="pixels", size="exact"
    )
    assert ok.findings() == []
    bad = TemplateImage(
        url="http://h/i?r={x},{y}",
        region="pixels",
        size="exact",
        rotation=(45,),
        qualities=MappingProxyType({"grey": "g"}),
    )
    messages = " ".join(f.message for f in bad.findings())
    for fragment in ("{h}", "{w}", "{width}", "45", "grey", "rotation is listed"):
        assert fragment in messages


def test_thumbor_urls() -> None:
    # signatures from a reference signer checked against libthumbor and a live Thumbor 7.8
    assert sign("test-key", "0x0:150x100/75x50/filters:stretch():format(png)/my%20quad.png") == (
        "RHOIGLHWiko8vQm3mqmDnTQ17eQ="
    )
    assert sign("test-key", "meta/quad.png") == "m_ejunI9bQHKcLf5bRX0CbNlBNk="
    settings = ThumborSettings(type="thumbor", url="http://t", security_key="test-key")
    backend = ThumborBackend("t", settings)
    backend.urls = settings.templates()
    info = SourceInfo(300, 200)
    op = NativeOp(Box(0, 0, 150, 100), size=(75, 50), format=Format.PNG)
    path = backend.operations(op, info)
    assert path == "0x0:150x100/75x50/filters:stretch():format(png)"
    url = str(backend.thumbor_url(path, Target("t", "my quad.png")))
    assert url == (
        "http://t/RHOIGLHWiko8vQm3mqmDnTQ17eQ=/0x0:150x100/75x50/"
        "filters:stretch():format(png)/my%20quad.png"
    )
    turned = NativeOp(
        Box(0, 0, 300, 200),
        size=(100, 67),
        rotation=90,
        mirror=True,
        quality=Quality.GRAY,
        format=Format.JPG,
    )
    # no crop for the whole image; IIIF 90 clockwise is Thumbor's rotate(270)
    assert backend.operations(turned, info) == (
        "-100x67/filters:stretch():rotate(270):grayscale():format(jpeg)"
    )


def test_upstream_validators_are_case_insensitive() -> None:
    from multidict import CIMultiDict

    from iiif_shim.upstream.client import Answer

    answer = Answer(
        200,
        CIMultiDict({"Etag": '"abc"', "last-modified": "Tue, 24 Nov 2026 02:13:43 GMT"}),
        b"",
        True,
    )
    assert answer.version == '"abc"'  # Thumbor and others spell it "Etag"
    assert answer.last_modified == 1795486423.0


def test_upstream_tiles_serve_outputs_past_its_max_width() -> None:
    service = read_service(IIPSRV_INFO).native
    assert isinstance(service, ServiceFacts)
    assert service.capabilities.reductions and service.pyramid is not None
    from iiif_shim.core.planner import plan
    from iiif_shim.iiif.request import parse_image_request
    from iiif_shim.iiif.resolve import Limits, resolve

    req = parse_image_request(Version.V3, "chart", "full", "max", "0", "default.jpg")
    big = plan(resolve(req, 6000, 4000, Limits(12000)), service.capabilities, service.pyramid.grid)
    assert (big.native.reduction, big.native.size) == (1, None)  # tiles, not an upscaled 5000px


def test_every_backend_type_has_its_settings_and_a_real_server_in_the_contract_suite() -> None:
    assert set(BACKEND_TYPES) == set(BACKEND_SETTINGS)
    for name, cls in BACKEND_TYPES.items():
        assert BACKEND_SETTINGS[name] is cls.settings_class, name
    assert set(CONTRACT_SHIMS) == set(BACKEND_TYPES)
    assert set(BACKEND_NAMES) == {name for names in CONTRACT_SHIMS.values() for name in names}
