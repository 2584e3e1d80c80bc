"""What a level-0 copy of one image holds: pure, no I/O.

Its info.json of each version is the shim's own (``iiif/info.py``: the same tile grid, sizes
within the limits, rights) declared level 0: 3.0 ``profile: level0`` with no extra formats,
qualities or features; 2.1 the level-0 profile URI (with the size limits, when there are any).
Its image files are every request a level-0 client makes from that document, at the URL path it
makes it:

- the tiles at every scale factor in the forms level-0 clients build from ``tiles`` (region
  ``x,y,w,h``, or ``full`` for a tile that is the whole image; size 3.0 ``w,h`` or ``max``,
  2.1 ``w,`` or ``full``): not the spec's canonical forms where they differ (a full-size tile
  that is not the whole image is not also written at ``x,y,w,h/max``), which no viewer asks;
- the tiles as OpenSeadragon 6 asks for them (``IIIFTileSource.getTileUrl``: sizes taken from
  ``sizes`` when they match its levels, ``full`` as region and size where it uses them);
- the tiles as the OpenSeadragon bundled in Mirador 4.0.0 asks for them: the same URLs, but it
  takes its level sizes from ``sizes`` whenever there are as many as its levels (adding the
  full size) or one more, whether or not they match its scale factors, which long thin images
  and images larger than ``maxWidth`` make them not do;
- the tiles as Leaflet-IIIF 3 asks for them (square tiles of ``tiles[0].width``, and the whole
  image at up to 5 zoom levels below its smallest tile, for maps smaller than that);
- each ``sizes`` entry as ``full/{w},{h}`` (3.0) and ``full/{w},`` (2.1); ``full/max`` (3.0),
  ``full/full`` and ``full/max`` (2.1);
- what the exported documents point at (``extras``: thumbnails, canvases' images).

Paths whose requests resolve to the same pixels (the same region, output size, rotation,
quality and format: ``iiif/resolve.py``) form one :class:`ImageFile`, made once and linked.
A plan holds one image's files only; callers plan images one at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from iiif_shim.base.errors import ShimError
from iiif_shim.iiif.info import ImageFacts, Offer, image_info
from iiif_shim.iiif.profile import Version
from iiif_shim.iiif.request import ImageRequest, parse_image_request
from iiif_shim.iiif.resolve import Limits, resolve

LEVEL0_V2 = "http://iiif.io/api/image/2/level0.json"
_LIMIT_KEYS = ("maxWidth", "maxHeight", "maxArea")
_EXTRA_KEYS = ("extraFormats", "extraQualities", "extraFeatures")
QUALITY_FORMAT = "default.jpg"  # the one quality and format of level 0
LEAFLET_BELOW = 5  # zoom levels Leaflet-IIIF adds below its smallest tile for small maps
# Bytes a JPEG of the shim's default quality (85) holds per output pixel, at most, for ordinary
# material: the bundled samples measured 0.21 (rings.jp2), 0.12 (the colour chart), 0.03 to
# 0.06 (flat images); docs/export.md. The estimate's only assumption.
BYTES_PER_PIXEL = 0.3


@dataclass(frozen=True)
class ImageFile:
    """Pixels written once, at each of ``paths`` (relative to the export's folder)."""

    request: ImageRequest  # what the image service is asked for
    paths: tuple[str, ...]
    width: int
    height: int

    @property
    def estimated_bytes(self) -> int:
        """What the first path is expected to hold; the others are links to it."""
        return max(200, round(self.width * self.height * BYTES_PER_PIXEL))


@dataclass(frozen=True)
class ImagePlan:
    identifier: str
    documents: tuple[tuple[str, bytes], ...]  # (path, bytes): its info.json files
    files: tuple[ImageFile, ...]
    unservable: tuple[str, ...] = ()  # paths a client would ask that the service refuses

    @property
    def file_count(self) -> int:
        return len(self.documents) + sum(len(f.paths) for f in self.files)

    @property
    def estimated_bytes(self) -> int:
        return sum(len(b) for _, b in self.documents) + sum(f.estimated_bytes for f in self.files)


Extra = tuple[Version, str, str, str, str]  # version, region, size, rotation, quality.format


def level0_info(
    version: Version, base_id: str, facts: ImageFacts, offer: Offer, rights: str | None
) -> dict[str, Any]:
    """The shim's info.json of ``facts`` declared level 0 (see the module's text)."""
    doc = image_info(version, base_id, facts, offer, rights=rights)
    if version is Version.V3:
        for key in _EXTRA_KEYS:
            doc.pop(key, None)
        doc["profile"] = "level0"
        return doc
    given = doc["profile"][1] if len(doc["profile"]) > 1 else {}
    limits = {k: given[k] for k in _LIMIT_KEYS if k in given}
    doc["profile"] = [LEVEL0_V2, limits] if limits else [LEVEL0_V2]
    return doc


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _grid(doc: dict[str, Any]) -> tuple[int, int, tuple[int, ...]] | None:
    tiles = doc.get("tiles") or []
    if not tiles:
        return None
    tile = tiles[0]
    return tile["width"], tile.get("height", tile["width"]), tuple(tile["scaleFactors"])


def canonical_tiles(doc: dict[str, Any], version: Version) -> Iterator[tuple[str, str]]:
    """(region, size) of every tile at every scale factor, in the forms clients build."""
    grid = _grid(doc)
    if grid is None:
        return
    width, height = doc["width"], doc["height"]
    tw, th, factors = grid
    for sf in factors:
        rw, rh = tw * sf, th * sf
        for y in range(0, height, rh):
            for x in range(0, width, rw):
                w, h = min(rw, width - x), min(rh, height - y)
                ow, oh = _ceil(w, sf), _ceil(h, sf)
                regions = [f"{x},{y},{w},{h}"]
                if (x, y, w, h) == (0, 0, width, height):
                    regions.append("full")
                if version is Version.V3:
                    sizes = [f"{ow},{oh}"] + (["max"] if (ow, oh) == (width, height) else [])
                else:
                    sizes = [f"{ow},"] + (["full"] if ow == width else [])
                for region in regions:
                    for size in sizes:
                        yield region, size


def _js_round(value: float) -> int:
    return math.floor(value + 0.5)


def _osd_level_sizes(
    doc: dict[str, Any], factors: tuple[int, ...], max_level: int, bundled: bool = False
) -> list[tuple[int, int]] | None:
    """OpenSeadragon's ``levelSizes``: ``sizes`` (with the full size added) when there is one
    for each of its levels and, if there are as many scale factors, each matches its own.
    ``bundled``: Mirador 4.0.0's OpenSeadragon, which takes ``sizes`` (sorted by width) when
    there are ``max_level`` of them (adding the full size) or ``max_level + 1``, unchecked."""
    sizes = doc.get("sizes") or []
    if not sizes:
        return None
    width, height = doc["width"], doc["height"]
    if bundled:
        if len(sizes) not in (max_level, max_level + 1):
            return None
        loose = sorted(((s["width"], s["height"]) for s in sizes), key=lambda s: s[0])
        return loose + ([(width, height)] if len(sizes) == max_level else [])
    ordered = sorted(((s["width"], s["height"]) for s in sizes), key=lambda s: s[0])
    if ordered[-1][0] < width and ordered[-1][1] < height:
        ordered.append((width, height))
    count = len(ordered)
    if count != max_level + 1:
        return None
    if len(factors) == count:
        for e in range(count):
            factor = factors[count - e - 1]
            w, h = ordered[e]
            if _js_round(width / w) != factor or _js_round(height / h) != factor:
                return None
    return ordered


def openseadragon_tiles(
    doc: dict[str, Any], version: Version, bundled: bool = False
) -> Iterator[tuple[str, str]]:
    """(region, size) of every tile OpenSeadragon 6.1 asks of this level-0 document
    (``IIIFTileSource``, one ``tiles`` entry); ``bundled``: the one Mirador 4.0.0 bundles."""
    grid = _grid(doc)
    if grid is None:
        return
    width, height = doc["width"], doc["height"]
    tw, th, factors = grid
    v3 = version is Version.V3
    max_level = round(math.log2(max(factors)))
    level_sizes = _osd_level_sizes(doc, factors, max_level, bundled)
    for level in range(max_level + 1):
        n = 0.5 ** (max_level - level)
        if level_sizes is not None:
            r, o = level_sizes[level]
            cols, rows = math.ceil(r / tw), math.ceil(o / th)
        else:
            r, o = math.ceil(width * n), math.ceil(height * n)
            cols, rows = math.ceil(width * n / tw), math.ceil(height * n / th)
        t, tt = round(tw / n), round(th / n)
        for i in range(rows):
            for e in range(cols):
                if r < tw and o < th:
                    region = "full"
                    if v3:
                        size = "max" if (r, o) == (width, height) else f"{r},{o}"
                    else:
                        size = "full" if r == width else f"{r},"
                else:
                    a, b = e * t, i * tt
                    w, h = min(t, width - a), min(tt, height - b)
                    d, p = min(tw, r - e * tw), min(th, o - i * th)
                    if min(w, h, d, p) <= 0:
                        continue  # past the image: no client that asks it gets an image
                    whole = (a, b, w, h) == (0, 0, width, height)
                    region = "full" if whole else f"{a},{b},{w},{h}"
                    if v3:
                        size = "max" if (d, p) == (width, height) else f"{d},{p}"
                    else:
                        size = "full" if d == width else f"{d},"
                yield region, size


def mirador_tiles(doc: dict[str, Any], version: Version) -> Iterator[tuple[str, str]]:
    """(region, size) of every tile the OpenSeadragon of Mirador 4.0.0 asks of this document."""
    return openseadragon_tiles(doc, version, bundled=True)


def leaflet_tiles(doc: dict[str, Any], version: Version) -> Iterator[tuple[str, str]]:
    """(region, size) of every tile Leaflet-IIIF 3.0 asks of this document."""
    width, height = doc["width"], doc["height"]
    tiles = doc.get("tiles") or []
    ts = tiles[0]["width"] if tiles else 256
    v3 = doc.get("type") == "ImageService3"

    def ceil_log2(x: float) -> int:
        return math.ceil(math.log(x) / math.log(2))

    top = max(ceil_log2(width / ts), ceil_log2(height / ts), 0)
    for zoom in range(-LEAFLET_BELOW, top + 1):
        scale = 2 ** (top - zoom)
        base = ts * scale
        cols = math.ceil(math.ceil(width / scale) / ts) if zoom >= 0 else 1
        rows = math.ceil(math.ceil(height / scale) / ts) if zoom >= 0 else 1
        for y in range(rows):
            for x in range(cols):
                minx, miny = x * base, y * base
                xd, yd = min(minx + base, width) - minx, min(miny + base, height) - miny
                size = f"{math.ceil(xd / scale)},"
                if v3:
                    size += f"{math.ceil(yd / scale)}"
                yield f"{minx},{miny},{xd},{yd}", size


def whole_images(doc: dict[str, Any], version: Version) -> Iterator[tuple[str, str]]:
    """(region, size) of each ``sizes`` entry and of the whole image at its largest."""
    for entry in doc.get("sizes") or []:
        w, h = entry["width"], entry["height"]
        yield "full", f"{w},{h}" if version is Version.V3 else f"{w},"
    if version is Version.V3:
        yield "full", "max"
    else:
        yield "full", "full"
        yield "full", "max"


def client_requests(doc: dict[str, Any], version: Version) -> dict[tuple[str, str], None]:
    """Every (region, size) a level-0 client asks of ``doc``, once each, in a stable order."""
    found: dict[tuple[str, str], None] = {}
    for source in (canonical_tiles, whole_images, openseadragon_tiles, mirador_tiles,
                   leaflet_tiles):  # fmt: skip
        for pair in source(doc, version):
            found.setdefault(pair, None)
    return found


def plan_image(
    identifier: str,
    facts: ImageFacts,
    offer: Offer,
    limits: Limits,
    rights: str | None,
    versions: Iterable[Version],
    iiif_base: str,
    tree: str,
    service_id: Any,
    extras: Iterable[Extra] = (),
) -> ImagePlan:
    """One image's level-0 copy: ``iiif_base`` is the public URL of the Image API (before
    ``/3/``), ``tree`` the folder below the export's that holds it (``iiif``), and
    ``service_id(version, identifier)`` the id of its service."""
    documents: list[tuple[str, bytes]] = []
    groups: dict[Any, tuple[ImageRequest, list[str], int, int]] = {}
    unservable: list[str] = []
    wanted: list[Extra] = []
    for version in versions:
        folder = "/".join(p for p in (tree, version.value, identifier) if p)
        doc = level0_info(version, service_id(version, identifier), facts, offer, rights)
        documents.append((f"{folder}/info.json", json.dumps(doc, indent=2).encode()))
        wanted += [(version, r, s, "0", QUALITY_FORMAT) for r, s in client_requests(doc, version)]
    wanted += list(extras)
    for version, region, size, rotation, quality_format in wanted:
        folder = "/".join(p for p in (tree, version.value, identifier) if p)
        path = f"{folder}/{region}/{size}/{rotation}/{quality_format}"
        try:
            request = parse_image_request(
                version, identifier, region, size, rotation, quality_format
            )
            done = resolve(request, facts.width, facts.height, limits)
        except ShimError as exc:
            unservable.append(f"{path}: {exc.public_text()}")
            continue
        key = (done.region, done.width, done.height, done.rotation, done.quality, done.format)
        if key not in groups:
            groups[key] = (request, [], done.width, done.height)
        if path not in groups[key][1]:
            groups[key][1].append(path)
    files = tuple(ImageFile(req, tuple(paths), w, h) for req, paths, w, h in groups.values())
    return ImagePlan(identifier, tuple(documents), files, tuple(unservable))
