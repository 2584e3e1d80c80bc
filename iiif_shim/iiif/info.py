"""Image information documents (info.json) for Image API 3.0 and 2.1. Pure, no I/O.

Everything advertised is derived from what the server can really do for this image: the formats
the imaging layer can write, the qualities that make sense for the source's colours, upscaling
only when size limits bound it, and tiles and sizes that are all servable within the limits
(the degraded tier's too: ``Limits.degraded``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from iiif_shim.iiif.profile import (
    LEVEL2_FEATURES,
    LEVEL2_FORMATS,
    LEVEL2_QUALITIES,
    PIPELINE_FEATURES,
    PROTOCOL,
    UPSCALING_FEATURE,
    Colour,
    Format,
    Quality,
    Version,
)
from iiif_shim.iiif.resolve import Limits, confine, height_for_width

_MAX_SCALE_FACTOR = 2**16


@dataclass(frozen=True)
class TileGrid:
    """A tile grid as info.json describes it."""

    width: int
    height: int
    scale_factors: tuple[int, ...]


class ImageFacts(Protocol):
    """What info.json is built from: the image's size, its colour and its native tiles."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def colour(self) -> Colour: ...

    @property
    def tiles(self) -> TileGrid | None: ...


@dataclass(frozen=True)
class Offer:
    """What the server offers for every image, independent of the image itself."""

    formats: frozenset[Format]
    limits: Limits
    tile_size: int


def scale_factors(width: int, height: int, tile: int) -> tuple[int, ...]:
    """Powers of two from 1 until the whole image fits in one tile."""
    factors = [1]
    while (
        math.ceil(width / factors[-1]) > tile or math.ceil(height / factors[-1]) > tile
    ) and factors[-1] < _MAX_SCALE_FACTOR:
        factors.append(factors[-1] * 2)
    return tuple(factors)


def tile_grid(source: ImageFacts, offer: Offer) -> TileGrid | None:
    """The backend's native grid when it has one that fits the limits, else the configured one;
    under a ``tier_scale`` (the degraded tier) the scale factors of its virtual image: its own
    (``k``, the image halved until it fits) first, then the grid's coarser ones, and more
    powers of two until the whole image is one tile."""
    grid = source.tiles
    limits = offer.limits
    if grid is None or not limits.fits(grid.width, grid.height):
        size = offer.tile_size
        if limits.tier_scale is not None:  # the degraded tier: tiles of half its limits at
            # most, so a 2.1 ``w,`` whose height the aspect ratio rounds up still fits
            side = min(limits.max_width or size, limits.effective_max_height or size)
            size = min(size, max(1, side // 2))
        if not limits.fits(size, size):
            return None
        grid = TileGrid(size, size, scale_factors(source.width, source.height, size))
    tier_scale = offer.limits.tier_scale
    if tier_scale is not None:
        least = min(tier_scale.block, _MAX_SCALE_FACTOR)
        factors = [least, *(f for f in grid.scale_factors if f > least)]
        while (
            math.ceil(source.width / factors[-1]) > grid.width
            or math.ceil(source.height / factors[-1]) > grid.height
        ) and factors[-1] < _MAX_SCALE_FACTOR:
            factors.append(factors[-1] * 2)
        grid = TileGrid(grid.width, grid.height, tuple(factors))
    return grid


def full_sizes(source: ImageFacts, grid: TileGrid | None, offer: Offer) -> list[tuple[int, int]]:
    """Full-image sizes at each scale factor, smallest first, all within the limits."""
    factors = (
        grid.scale_factors if grid else scale_factors(source.width, source.height, offer.tile_size)
    )
    sizes: list[tuple[int, int]] = []
    for factor in sorted(factors, reverse=True):
        w = math.ceil(source.width / factor)
        h = height_for_width(w, source.width, source.height)
        if offer.limits.fits(w, h) and (w, h) not in sizes:
            sizes.append((w, h))
    if offer.limits.tier_scale is not None:  # the degraded tier's whole image, as `max` gives it
        largest = confine(source.width, source.height, 1.0, offer.limits)
        if offer.limits.fits(*largest) and largest not in sizes:
            sizes.append(largest)
    return sizes


def qualities(source: ImageFacts) -> list[Quality]:
    """Qualities for this source: ``color`` only when the source has colour (spec 4.4)."""
    found = [Quality.DEFAULT]
    if source.colour is Colour.COLOR:
        found.append(Quality.COLOR)
    found += [Quality.GRAY, Quality.BITONAL]
    return found


def features(version: Version, offer: Offer) -> set[str]:
    names = set(LEVEL2_FEATURES[version] | PIPELINE_FEATURES[version])
    if offer.limits.allows_upscaling:
        names.add(UPSCALING_FEATURE[version])
    return names


def _ordered_formats(formats: frozenset[Format]) -> list[str]:
    return [f.value for f in Format if f in formats]


def image_info(
    version: Version, base_id: str, source: ImageFacts, offer: Offer, rights: str | None = None
) -> dict[str, Any]:
    """The info.json document for ``source`` served at ``base_id``."""
    grid = tile_grid(source, offer)
    sizes = full_sizes(source, grid, offer)
    extra_formats = _ordered_formats(offer.formats - LEVEL2_FORMATS)
    extra_qualities = [q.value for q in qualities(source) if q not in LEVEL2_QUALITIES[version]]
    extra_features = sorted(features(version, offer) - LEVEL2_FEATURES[version])
    limits = offer.limits
    limit_props: dict[str, int] = {}
    if limits.max_width is not None:
        limit_props["maxWidth"] = limits.max_width
        if limits.max_height is not None:
            limit_props["maxHeight"] = limits.max_height
    if limits.max_area is not None:
        limit_props["maxArea"] = limits.max_area

    if version is Version.V3:
        doc: dict[str, Any] = {
            "@context": version.context,
            "id": base_id,
            "type": "ImageService3",
            "protocol": PROTOCOL,
            "profile": "level2",
            "width": source.width,
            "height": source.height,
            **limit_props,
        }
        if sizes:
            doc["sizes"] = [{"type": "Size", "width": w, "height": h} for w, h in sizes]
        if grid:
            doc["tiles"] = [_tile(grid, "Tile")]
        if extra_formats:
            doc["extraFormats"] = extra_formats
        if extra_qualities:
            doc["extraQualities"] = extra_qualities
        if extra_features:
            doc["extraFeatures"] = extra_features
        if rights:
            doc["rights"] = rights
        return doc

    profile: dict[str, Any] = {}
    if extra_formats:
        profile["formats"] = extra_formats
    if extra_qualities:
        profile["qualities"] = extra_qualities
    if extra_features:
        profile["supports"] = extra_features
    profile.update(limit_props)
    doc = {
        "@context": version.context,
        "@id": base_id,
        "protocol": PROTOCOL,
        "width": source.width,
        "height": source.height,
    }
    if sizes:
        doc["sizes"] = [{"width": w, "height": h} for w, h in sizes]
    if grid:
        doc["tiles"] = [_tile(grid, None)]
    doc["profile"] = [version.level2_uri, profile] if profile else [version.level2_uri]
    if rights:
        doc["license"] = rights
    return doc


def _tile(grid: TileGrid, type_name: str | None) -> dict[str, Any]:
    tile: dict[str, Any] = {"type": type_name} if type_name else {}
    tile["width"] = grid.width
    if grid.height != grid.width:
        tile["height"] = grid.height
    tile["scaleFactors"] = list(grid.scale_factors)
    return tile
