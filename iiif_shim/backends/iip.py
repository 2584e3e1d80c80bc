"""``iip``: IIPImage's iipsrv, through its native IIP protocol (``?FIF=...``).

Metadata from one ``OBJ=`` request: ``Max-size``, ``Tile-size``, ``Resolution-number``,
``Resolutions`` (the stored level sizes) and ``Colorspace`` (gray or colour), so info.json
advertises iipsrv's own tile grid. Natively:

- a request that is one stored tile, or any region past ``max_cvt`` (iipsrv silently clamps
  exports to its ``MAX_CVT``), or a very small output: ``JTL=r,n`` tiles, stitched;
- otherwise an export: ``RGN`` (fractions), ``WID``/``HEI`` (iipsrv fits inside the box and never
  distorts, so the larger side is pinned and Pillow fixes the last pixel or two, and any
  distortion), ``ROT`` (90s clockwise, ``!n`` mirrors first as IIIF does), ``COL=grey``, JPEG.

Pillow does the rest: bitonal, arbitrary angles, every format but JPEG (iipsrv answers any
``CVT`` with JPEG). iipsrv's quirks are kept away from: bodies are checked to be JPEG (it can
answer 200 with an HTML error), outputs under ``min_native_size`` pixels go through tiles (tiny
regions at a coarse level make iipsrv crash), and only known commands are sent.
"""

from __future__ import annotations

import os
from pathlib import Path

from iiif_shim.backends.pyramid import PyramidBackend
from iiif_shim.backends.settings import IipSettings
from iiif_shim.base.errors import BackendError
from iiif_shim.iiif.profile import Colour, Format, Quality
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import MAX_LEVELS, Level, NativeFacts, Pyramid, PyramidFacts, SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.upstream.client import Answer

_QUERY = (
    "OBJ=IIP,1.0&OBJ=Max-size&OBJ=Tile-size&OBJ=Resolution-number&OBJ=Resolutions&OBJ=Colorspace,*"
)


def parse_obj(text: str) -> dict[str, str]:
    """``key:value`` lines (CRLF, maybe a leading blank line) of an OBJ reply."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _read_obj(answer: Answer) -> tuple[Pyramid, bool]:
    """The pyramid iipsrv describes, and whether the image is grey."""
    obj = parse_obj(answer.text())
    width, height = (int(v) for v in obj["Max-size"].split())
    tile_w, tile_h = (int(v) for v in obj["Tile-size"].split())
    count = int(obj["Resolution-number"])
    if not 1 <= count <= MAX_LEVELS:
        raise ValueError(f"{count} resolutions")
    sizes = [tuple(int(v) for v in s.split()) for s in obj["Resolutions"].split(",")[: count + 1]]
    if len(sizes) != count or sizes[-1] != (width, height):
        raise ValueError("its resolutions do not match its size")
    levels = tuple(
        Level(1 << i, w, h)
        for i, (w, h) in enumerate(reversed(sizes))  # largest first
    )
    # "Colorspace,0-N,0:<calibrated> 0 <type> ...": type 1 is grey, 3 sRGB, 4 CIELAB
    planes = next((v for k, v in obj.items() if k.startswith("Colorspace")), "")
    return Pyramid(width, height, tile_w, tile_h, levels), planes.split()[2:3] == ["1"]


class IipBackend(PyramidBackend[IipSettings]):
    settings_class = IipSettings

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        return Capabilities(
            region=True,
            size_keeps_aspect=True,
            upscale=True,
            max_size=self.settings.max_cvt,
            min_size=self.settings.min_native_size,
            reductions=True,
            rotation90=True,
            mirror=True,
            qualities=frozenset({Quality.GRAY}),
            formats=frozenset({Format.JPG}),
        )

    def _url(self, fif: str, commands: str) -> str:
        return f"{self.settings.url.split('?', 1)[0]}?FIF={fif}&{commands}"

    def tile_base(self, target: Target) -> str:
        """The FIF value, encoded for the query."""
        return self.url("path", target.template_values())[1:]

    async def facts(self, target: Target) -> SourceInfo:
        url = self._url(self.tile_base(target), _QUERY)
        (pyramid, gray), answer = await self.metadata(
            url, _read_obj, what="metadata", target=target
        )
        return SourceInfo(
            width=pyramid.width,
            height=pyramid.height,
            colour=Colour.GRAY if gray else Colour.COLOR,
            tiles=pyramid.grid,
            native=PyramidFacts(pyramid, "jpg"),
            version=answer.version,
            last_modified=answer.last_modified,
        )

    def tile_url(self, base: str, facts: PyramidFacts, level: Level, col: int, row: int) -> str:
        p = facts.pyramid
        resolution = len(p.levels) - 1 - p.levels.index(level)  # 0 is the smallest
        return self._url(base, f"JTL={resolution},{row * p.columns(level) + col}")

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        if op.reduction:
            return await super().fetch(target, op, info)
        r = op.region
        commands = []
        if (r.x, r.y, r.w, r.h) != (0, 0, info.width, info.height):
            commands.append(
                f"RGN={r.x / info.width:.8f},{r.y / info.height:.8f},"
                f"{r.w / info.width:.8f},{r.h / info.height:.8f}"
            )
        tw, th = op.size or (r.w, r.h)
        wid, hei = (tw, th + 1) if tw >= th else (tw + 1, th)  # pin the larger side
        commands.append(f"WID={wid}&HEI={hei}")
        if op.quality is Quality.GRAY:
            commands.append("COL=grey")
        if op.rotation or op.mirror:
            commands.append(f"ROT={'!' if op.mirror else ''}{op.rotation}")
        commands.append("CVT=jpeg")
        fif = self.tile_base(target)
        url = self._url(fif, "&".join(commands))
        fetched = await self.image(url, target)
        if fetched.path is not None:  # a large answer, in a temporary file
            end = await self.context.run_blocking(_last_bytes, fetched.path)
        else:
            end = (fetched.data or b"")[-_END_BYTES:]
        if not end.rstrip(b"\r\n").endswith(b"\xff\xd9"):  # line ends after it are tolerated
            raise BackendError(f"backend '{self.name}' sent a JPEG with something after it")
        return fetched


_END_BYTES = 4096  # the end of an answer, where a JPEG's end marker must be (then line ends)


def _last_bytes(path: Path) -> bytes:
    with path.open("rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - _END_BYTES))
        return file.read()
