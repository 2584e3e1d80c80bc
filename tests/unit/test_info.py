"""info.json for 3.0 and 2.1, derived from the source, the limits and what Pillow can write."""

from __future__ import annotations

import math

from iiif_shim.iiif.info import Offer, TileGrid, image_info, scale_factors
from iiif_shim.iiif.profile import Colour, Format, Version
from iiif_shim.iiif.resolve import Limits
from iiif_shim.model.facts import SourceInfo

ALL = frozenset(Format)
LIMITS = Limits(12000, 12000, 100_000_000)
SOURCE = SourceInfo(width=6000, height=4000)


def test_v3_document() -> None:
    doc = image_info(
        Version.V3,
        "https://ex.org/iiif/3/abc",
        SOURCE,
        Offer(ALL, LIMITS, 512),
        rights="http://creativecommons.org/licenses/by/4.0/",
    )
    assert list(doc)[:5] == ["@context", "id", "type", "protocol", "profile"]
    assert doc["@context"] == "http://iiif.io/api/image/3/context.json"
    assert doc["id"] == "https://ex.org/iiif/3/abc"
    assert doc["type"] == "ImageService3"
    assert doc["protocol"] == "http://iiif.io/api/image"
    assert doc["profile"] == "level2"
    assert (doc["width"], doc["height"]) == (6000, 4000)
    assert (doc["maxWidth"], doc["maxHeight"], doc["maxArea"]) == (12000, 12000, 100_000_000)
    assert doc["tiles"] == [{"type": "Tile", "width": 512, "scaleFactors": [1, 2, 4, 8, 16]}]
    assert [(s["width"], s["height"]) for s in doc["sizes"]] == [
        (375, 250),
        (750, 500),
        (1500, 1000),
        (3000, 2000),
        (6000, 4000),
    ]
    assert doc["extraFormats"] == ["tif", "gif", "jp2", "pdf", "webp"]
    assert doc["extraQualities"] == ["color", "gray", "bitonal"]
    assert doc["extraFeatures"] == [
        "canonicalLinkHeader",
        "mirroring",
        "profileLinkHeader",
        "rotationArbitrary",
        "sizeUpscaling",
    ]
    assert doc["rights"] == "http://creativecommons.org/licenses/by/4.0/"
    for key in ("@id", "license", "attribution", "logo"):
        assert key not in doc


def test_v2_document() -> None:
    doc = image_info(
        Version.V2,
        "http://h/iiif/2/a%2Fb",
        SOURCE,
        Offer(ALL, LIMITS, 512),
        rights="http://rightsstatements.org/vocab/InC/1.0/",
    )
    assert doc["@context"] == "http://iiif.io/api/image/2/context.json"
    assert doc["@id"] == "http://h/iiif/2/a%2Fb"
    assert "id" not in doc and "type" not in doc
    level, extra = doc["profile"]
    assert level == "http://iiif.io/api/image/2/level2.json"
    assert extra["formats"] == ["tif", "gif", "jp2", "pdf", "webp"]
    assert extra["qualities"] == ["color", "gray"]  # bitonal is in level2 for 2.x
    assert "sizeAboveFull" in extra["supports"] and "regionSquare" in extra["supports"]
    assert "sizeUpscaling" not in extra["supports"]
    assert (extra["maxWidth"], extra["maxHeight"], extra["maxArea"]) == (12000, 12000, 10**8)
    assert doc["tiles"] == [{"width": 512, "scaleFactors": [1, 2, 4, 8, 16]}]
    assert all(set(s) == {"width", "height"} for s in doc["sizes"])
    assert doc["license"] == "http://rightsstatements.org/vocab/InC/1.0/"


def test_level_only_when_nothing_extra() -> None:
    """2.1 SHOULD omit formats/qualities/supports that add nothing beyond the level."""
    offer = Offer(frozenset({Format.JPG, Format.PNG}), Limits(), 512)
    gray = SourceInfo(width=100, height=100, colour=Colour.GRAY)
    doc3 = image_info(Version.V3, "http://h/x", gray, offer)
    assert "extraFormats" not in doc3
    assert doc3["extraQualities"] == ["gray", "bitonal"]  # no color for a gray source
    assert "sizeUpscaling" not in doc3["extraFeatures"]  # no limits, no upscaling
    assert not {"maxWidth", "maxHeight", "maxArea"} & set(doc3)
    doc2 = image_info(Version.V2, "http://h/x", gray, offer)
    assert "formats" not in doc2["profile"][1]
    assert doc2["profile"][1]["qualities"] == ["gray"]


def test_tiles_and_sizes_stay_within_limits() -> None:
    limits = Limits(max_width=2000, max_height=2000, max_area=3_000_000)
    doc = image_info(Version.V3, "http://h/x", SOURCE, Offer(ALL, limits, 512))
    for size in doc["sizes"]:
        assert limits.fits(size["width"], size["height"])
    assert max(s["width"] for s in doc["sizes"]) == 1500
    grid = SourceInfo(width=6000, height=4000, tiles=TileGrid(256, 128, (1, 2, 4)))
    doc = image_info(Version.V3, "http://h/x", grid, Offer(ALL, limits, 512))
    assert doc["tiles"] == [
        {"type": "Tile", "width": 256, "height": 128, "scaleFactors": [1, 2, 4]}
    ]


def test_scale_factors_reach_one_tile() -> None:
    for w, h, tile in [(6000, 4000, 512), (1000, 1000, 1000), (1, 1, 256), (70000, 10, 256)]:
        factors = scale_factors(w, h, tile)
        assert factors[0] == 1
        top = factors[-1]
        assert math.ceil(w / top) <= tile and math.ceil(h / top) <= tile
        assert len(factors) == 1 or math.ceil(max(w, h) / factors[-2]) > tile
