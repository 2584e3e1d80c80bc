"""``zoomify``: a Zoomify pyramid (``ImageProperties.xml`` and ``TileGroup`` folders of tiles).

``ImageProperties.xml`` gives the size and ``TILESIZE``. Tiers are made by halving (rounding up)
until one tile holds the image; tier 0 is the smallest. Tile ``{z}-{x}-{y}`` lives in
``TileGroup{g}`` with ``g = (tiles in all smaller tiers + y * columns + x) // 256``. The tile
format is not in the XML: ``tile_format`` (``jpg`` by default) says it. The shim checks
``NUMTILES`` against the tiers it computes, so a pyramid it would misread is a clear 502, not
wrong pixels. Level choice and stitching as for ``deepzoom``.
"""

from __future__ import annotations

from iiif_shim.backends.pyramid import PyramidBackend
from iiif_shim.backends.settings import ZoomifySettings
from iiif_shim.model.facts import Level, Pyramid, PyramidFacts, SourceInfo
from iiif_shim.model.plan import Target
from iiif_shim.upstream.client import Answer
from iiif_shim.upstream.parse import parse_xml


def parse_properties(text: str) -> tuple[int, int, int, int]:
    """(width, height, tile size, number of tiles) from ImageProperties.xml."""
    root = parse_xml(text)
    if root.tag.upper() != "IMAGE_PROPERTIES":
        raise ValueError("not a Zoomify ImageProperties.xml")
    a = {k.upper(): v for k, v in root.attrib.items()}
    return (
        int(a["WIDTH"]),
        int(a["HEIGHT"]),
        int(a.get("TILESIZE", "256")),
        int(a.get("NUMTILES", "0")),
    )


def _read_properties(answer: Answer) -> Pyramid:
    width, height, tile, numtiles = parse_properties(answer.text())
    pyramid = Pyramid.halving(width, height, tile, tile)
    counted = sum(pyramid.columns(lv) * pyramid.rows(lv) for lv in pyramid.levels)
    if numtiles and numtiles != counted:  # tiers we would misread: refuse, not wrong pixels
        raise ValueError(f"it says {numtiles} tiles where its tiers have {counted}")
    return pyramid


class ZoomifyBackend(PyramidBackend[ZoomifySettings]):
    settings_class = ZoomifySettings

    def tile_base(self, target: Target) -> str:
        return self.url("url", target.template_values()).rstrip("/")

    async def facts(self, target: Target) -> SourceInfo:
        url = f"{self.tile_base(target)}/ImageProperties.xml"
        pyramid, answer = await self.metadata(
            url, _read_properties, what="an ImageProperties.xml", target=target
        )
        return SourceInfo(
            width=pyramid.width,
            height=pyramid.height,
            tiles=pyramid.grid,
            native=PyramidFacts(pyramid, self.settings.tile_format),
            version=answer.version,
            last_modified=answer.last_modified,
        )

    def tile_url(self, base: str, facts: PyramidFacts, level: Level, col: int, row: int) -> str:
        p = facts.pyramid
        tiers = list(reversed(p.levels))  # tier 0 is the smallest
        z = tiers.index(level)
        index = sum(p.columns(t) * p.rows(t) for t in tiers[:z]) + row * p.columns(level) + col
        return f"{base}/TileGroup{index // 256}/{z}-{col}-{row}.{facts.suffix}"
