"""``iiif``: an upstream IIIF Image API 2.x or 3.0 service (an older or lower-level IIIF server).

The upstream's info.json says what it does: its compliance level, its ``extra*`` lists (3.0) or
profile object (2.x), its limits and its tiles. What that covers is asked of the upstream in its
own URL syntax; the shim does the rest in Pillow, and serves both versions at level 2 with its
own ids, formats and CORS. Its tiles are read as a pyramid: all a level-0 upstream (static
tiles) has, and for any upstream the way to outputs larger than its ``maxWidth``.

The upstream's own ``id`` is not used to build requests (it is often an internal or wrong host):
requests go to the configured ``url`` template.
"""

from __future__ import annotations

import math
import re
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from functools import partial
from typing import Any

from iiif_shim.backends.base import BackendContext, UpstreamBackend
from iiif_shim.backends.pyramid import assemble, fetch_tile
from iiif_shim.backends.settings import IiifSettings
from iiif_shim.cache.entry import source_key
from iiif_shim.cache.memory import SourceCache
from iiif_shim.iiif.info import TileGrid
from iiif_shim.iiif.profile import (
    LEVEL_FEATURES,
    LEVEL_FORMATS,
    LEVEL_QUALITIES,
    Colour,
    Format,
    Quality,
    Version,
)
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import (
    Level,
    NativeFacts,
    Pyramid,
    ServiceFacts,
    SourceInfo,
    native_as,
)
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.upstream.client import Body
from iiif_shim.upstream.parse import parse_json

_LEVEL_RE = re.compile(r"level([012])")


def _version(doc: dict[str, Any]) -> Version:
    context = doc.get("@context")
    contexts = context if isinstance(context, list) else [context]
    for c in contexts:
        if isinstance(c, str) and "/image/3/" in c:
            return Version.V3
        if isinstance(c, str) and "/image/2/" in c:
            return Version.V2
    raise ValueError("not an Image API 2.x or 3.0 info.json (unknown @context)")


def read_service(doc: dict[str, Any]) -> SourceInfo:
    """Parse an upstream info.json into the image's facts and what the service can do."""
    version = _version(doc)
    width, height = int(doc["width"]), int(doc["height"])
    extras: dict[str, Any] = {}
    if version is Version.V3:
        profile = doc.get("profile", "level0")
        level_match = _LEVEL_RE.search(str(profile))
        extras = doc
        features = set(doc.get("extraFeatures", []))
        formats = set(doc.get("extraFormats", []))
        qualities = set(doc.get("extraQualities", []))
    else:
        profiles = doc.get("profile", [])
        profiles = profiles if isinstance(profiles, list) else [profiles]
        level_match = _LEVEL_RE.search(str(profiles[0])) if profiles else None
        features, formats, qualities = set(), set(), set()
        for p in profiles[1:]:
            if isinstance(p, dict):
                features |= set(p.get("supports", []))
                formats |= set(p.get("formats", []))
                qualities |= set(p.get("qualities", []))
                extras = {**extras, **p}
    level = int(level_match.group(1)) if level_match else 0
    features |= LEVEL_FEATURES[version][level]
    known_formats = {f.value for f in Format}
    known_qualities = {q.value for q in Quality}
    fmts = frozenset(Format(f) for f in formats if f in known_formats) | LEVEL_FORMATS[level]
    quals = frozenset(Quality(q) for q in qualities if q in known_qualities)
    quals |= LEVEL_QUALITIES[version][level]
    max_w = extras.get("maxWidth")
    max_size = min(int(max_w), int(extras.get("maxHeight", max_w))) if max_w else None

    tiles = doc.get("tiles") or []
    grid = None
    if tiles and isinstance(tiles[0], dict) and tiles[0].get("width"):
        t = tiles[0]
        tw = int(t["width"])
        grid = TileGrid(
            tw, int(t.get("height", tw)), tuple(sorted(int(f) for f in t.get("scaleFactors", [1])))
        )
    # Its tiles are a pyramid: all a level-0 service has, and at any level the way to regions
    # larger than its maxWidth.
    pyramid = None
    if grid is not None:
        pyramid = Pyramid(
            width,
            height,
            grid.width,
            grid.height,
            tuple(
                Level(f, math.ceil(width / f), math.ceil(height / f)) for f in grid.scale_factors
            ),
        )
    if level == 0:
        if pyramid is None:
            raise ValueError("a level-0 service without tiles cannot be read")
        caps = Capabilities(region=True, reductions=True, formats=frozenset({Format.JPG}))
    else:
        sized_exact = "sizeByWh" if version is Version.V3 else "sizeByDistortedWh"
        caps = Capabilities(
            region="regionByPx" in features,
            size=sized_exact in features or "sizeByForcedWh" in features,
            size_keeps_aspect="sizeByW" in features,
            upscale=("sizeUpscaling" if version is Version.V3 else "sizeAboveFull") in features,
            max_size=max_size,
            reductions=pyramid is not None and "regionByPx" in features,
            rotation90="rotationBy90s" in features,
            mirror="mirroring" in features,
            qualities=quals - {Quality.DEFAULT},
            formats=fmts,
        )
    colour = Colour.COLOR if Quality.COLOR in quals or level < 2 else Colour.GRAY
    service = ServiceFacts(version, level, caps, pyramid)
    return SourceInfo(width=width, height=height, colour=colour, tiles=grid, native=service)


def request_path(base: str, service: ServiceFacts, op: NativeOp, info: SourceInfo) -> str:
    """The upstream image request for ``op``, in the upstream's own version syntax."""
    r = op.region
    whole = (r.x, r.y, r.w, r.h) == (0, 0, info.width, info.height)
    region = "full" if whole else f"{r.x},{r.y},{r.w},{r.h}"
    v3 = service.version is Version.V3
    if op.size is None or op.size == (r.w, r.h):
        size = "max" if v3 else "full"
    elif service.capabilities.size:
        size = f"{op.size[0]},{op.size[1]}"
    else:
        size = f"{op.size[0]},"
    if v3 and op.size and (op.size[0] > r.w or op.size[1] > r.h):
        size = "^" + size
    rotation = ("!" if op.mirror else "") + str(op.rotation)
    quality = (op.quality or Quality.DEFAULT).value
    fmt = (op.format or Format.JPG).value
    return f"{base}/{region}/{size}/{rotation}/{quality}.{fmt}"


class IiifBackend(UpstreamBackend[IiifSettings]):
    settings_class = IiifSettings
    native_note = "whatever the upstream's info.json declares"
    natives = (ServiceFacts,)

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        if not isinstance(native, ServiceFacts):
            return Capabilities()
        return replace(native.capabilities, min_size=self.settings.min_native_size)

    async def start(self, context: BackendContext) -> None:
        await super().start(context)
        self._tiles: SourceCache[str, bytes] = context.caches.memory_cache(
            "tile", self.settings.tile_cache_bytes, len
        )

    def base(self, target: Target) -> str:
        """Where requests go: the configured template, never the upstream's own id."""
        return self.url("url", target.template_values()).rstrip("/")

    async def facts(self, target: Target) -> SourceInfo:
        info, answer = await self.metadata(
            f"{self.base(target)}/info.json",
            lambda answer: read_service(parse_json(answer.body)),
            what="an info.json",
            target=target,
            headers={"Accept": "application/ld+json, application/json;q=0.9"},
        )
        return SourceInfo(
            width=info.width,
            height=info.height,
            colour=info.colour,
            tiles=info.tiles,
            native=info.native,
            version=answer.version,
            last_modified=answer.last_modified,
        )

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        service = info.native
        if not isinstance(service, ServiceFacts):
            return None  # not its facts: the buffered way finds out (fetch)
        if service.pyramid is not None and (op.reduction or service.level == 0):
            return None  # assembled from tiles
        url = request_path(self.base(target), service, op, info)
        return self.upstream.stream(url, image_id=target.native_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        service = native_as(info, ServiceFacts, self.name)  # (FactsMismatch: not its facts)
        base = self.base(target)
        described = f"backend '{self.name}'"
        if service.pyramid is not None and (op.reduction or service.level == 0):
            pyramid = service.pyramid
            v3 = service.version is Version.V3

            def tile_url(level: Level, col: int, row: int) -> str:
                f = level.factor
                x, y = col * pyramid.tile_width * f, row * pyramid.tile_height * f
                w = min(pyramid.tile_width * f, info.width - x)
                h = min(pyramid.tile_height * f, info.height - y)
                tw, th = math.ceil(w / f), math.ceil(h / f)
                size = f"{tw},{th}" if v3 else f"{tw},"
                return f"{base}/{x},{y},{w},{h}/{size}/0/default.jpg"

            return await assemble(
                pyramid,
                op.region,
                max(op.reduction, 1),
                tile_url,
                partial(fetch_tile, self.upstream, image_id=target.native_id),
                self.context.run_blocking,
                self._tiles,
                source_key(self.name, target.native_id),
                described,
                self.context.record,
                self.settings.image_share,
            )
        return await self.image(request_path(base, service, op, info), target)
