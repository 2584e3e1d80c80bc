"""``deepzoom``: a Microsoft DeepZoom pyramid (a ``.dzi`` file and its ``_files/`` tiles).

The ``.dzi`` gives the size, ``TileSize``, ``Overlap`` and tile ``Format``. Level ``maxLevel =
ceil(log2(max(width, height)))`` is the full image and each level below halves it, rounding up;
tiles are ``{name}_files/{level}/{col}_{row}.{Format}`` and repeat ``Overlap`` pixels of each
neighbour. For a request the shim picks the smallest level still at least the size it needs,
fetches only the tiles that meet the region (concurrently), trims the overlap and stitches
them; Pillow does the rest. info.json advertises the native tile size.

Pyramids made by ``vips dzsave --depth onetile`` (or ``one``) number their levels differently
and are not readable as DeepZoom: use the default depth.
"""

from __future__ import annotations

import re

from iiif_shim.backends.pyramid import PyramidBackend
from iiif_shim.backends.settings import DeepZoomSettings
from iiif_shim.model.facts import Level, Pyramid, PyramidFacts, SourceInfo
from iiif_shim.model.plan import Target
from iiif_shim.upstream.client import Answer
from iiif_shim.upstream.parse import parse_xml

_SUFFIX_RE = re.compile(r"[A-Za-z0-9]{1,8}")


def parse_dzi(text: str) -> tuple[int, int, int, int, str]:
    """(width, height, tile size, overlap, format) from a .dzi document."""
    root = parse_xml(text)
    size = root.find("Size")
    if root.tag != "Image" or size is None:
        raise ValueError("not a DeepZoom .dzi (no Image/Size)")
    suffix = root.attrib.get("Format", "jpg")
    if not _SUFFIX_RE.fullmatch(suffix):  # it goes into every tile's URL
        raise ValueError(f"tile format {suffix[:20]!r}")
    return (
        int(size.attrib["Width"]),
        int(size.attrib["Height"]),
        int(root.attrib["TileSize"]),
        int(root.attrib.get("Overlap", "0")),
        suffix,
    )


def _read_dzi(answer: Answer) -> PyramidFacts:
    width, height, tile, overlap, suffix = parse_dzi(answer.text())
    return PyramidFacts(Pyramid.halving(width, height, tile, tile, overlap=overlap), suffix)


class DeepZoomBackend(PyramidBackend[DeepZoomSettings]):
    settings_class = DeepZoomSettings

    async def facts(self, target: Target) -> SourceInfo:
        url = self.url("url", target.template_values())
        native, answer = await self.metadata(url, _read_dzi, what="a .dzi", target=target)
        return SourceInfo(
            width=native.pyramid.width,
            height=native.pyramid.height,
            tiles=native.pyramid.grid,
            native=native,
            version=answer.version,
            last_modified=answer.last_modified,
        )

    def tile_base(self, target: Target) -> str:
        return self.url("url", target.template_values()).split("?", 1)[0][: -len(".dzi")] + "_files"

    def tile_url(self, base: str, facts: PyramidFacts, level: Level, col: int, row: int) -> str:
        p = facts.pyramid
        max_level = (max(p.width, p.height) - 1).bit_length()
        number = max_level - (level.factor.bit_length() - 1)
        return f"{base}/{number}/{col}_{row}.{facts.suffix}"
