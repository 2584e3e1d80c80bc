"""The layout of a JPEG 2000 codestream, read from its main header: what decoding it costs
depends on it (``cost.py``: OpenJPEG decodes one tile at a time into 32-bit samples, from that
tile's compressed bytes read whole).

:func:`codestream` finds the codestream (at the start of a raw ``.j2k``/``.j2c``, or in the
JP2 box ``jp2c``), then its SIZ marker (size, image and tile offsets, tile size, components
and their bits) and its COD marker (decomposition levels): a few bounded reads of the first
bytes (each length checked before it is read or skipped: never past the file's end, never more
than a marker holds), and ``None`` for anything it cannot make sense of, whatever the error
(``pillow.read_header`` refuses such a JPEG 2000 as not an image). With ``walk``, the
tile-parts' headers too (at most :data:`_MAX_PARTS`), for a file at hand, when its facts are
read. Blocking (it reads the file object it is given); a :class:`Ranges` reader's ``Missing``
passes through, so the parts it needs are fetched like the rest of a header
(``backends/http.py``)."""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import IO

from iiif_shim.model.facts import Codestream

_SOC_SIZ = b"\xff\x4f\xff\x51"
_MAX_BOXES = 64  # JP2 boxes walked before the codestream's
_MAX_MARKERS = 64  # main header markers read before COD
_MAX_PARTS = 1 << 16  # tile-parts walked for the largest tile's bytes
_MAX_OFFSET = 1 << 62  # past any file's end: a box or tile-part there is not walked to
_SIZ, _COD, _SOT, _SOD, _EOC = 0xFF51, 0xFF52, 0xFF90, 0xFF93, 0xFFD9


def codestream(
    fp: IO[bytes], nbytes: int | None = None, *, walk: bool = False
) -> Codestream | None:
    """The layout of the JPEG 2000 codestream in ``fp`` (a JP2 file or a raw codestream);
    ``None`` when it is neither or its main header cannot be read. ``nbytes``: the file's
    size, when known (kept with the layout). ``walk``: also the largest tile's compressed
    bytes, from the tile-parts' headers (one 12-byte read each, at most :data:`_MAX_PARTS`:
    for a file at hand, not one read by ranges). The position of ``fp`` is left where it was."""
    here = fp.tell()
    try:
        fp.seek(0)
        if fp.read(4) != _SOC_SIZ and not _to_codestream(fp, nbytes):
            return None
        layout = _main_header(fp, nbytes)
        if layout is not None and walk:
            largest = _largest_tile(fp, nbytes)
            return dataclasses.replace(layout, tile_bytes=largest) if largest else layout
        return layout
    except (OSError, ValueError, ArithmeticError, struct.error):  # a seek past what an offset
        # holds is an OverflowError on bytes in memory, a ValueError on a file
        return None
    finally:
        fp.seek(here)


def _to_codestream(fp: IO[bytes], nbytes: int | None) -> bool:
    """Position ``fp`` at the start of a JP2 file's ``jp2c`` box's contents; whether found
    (within the file's ``nbytes``, when known)."""
    fp.seek(0)
    at = 0
    for _ in range(_MAX_BOXES):
        head = fp.read(8)
        if len(head) < 8:
            return False
        length, kind = struct.unpack(">I4s", head)
        size = 8
        if length == 1:
            length = struct.unpack(">Q", fp.read(8))[0]
            size = 16
        if kind == b"jp2c":
            return fp.read(4) == _SOC_SIZ
        if length < size:  # 0: the box runs to the end (no codestream after it)
            return False
        at += length
        if not _before_end(at, nbytes):
            return False
        fp.seek(at)
    return False


def _main_header(fp: IO[bytes], nbytes: int | None) -> Codestream | None:
    """From just past SOC and SIZ's marker: SIZ's fields, then markers up to COD."""
    (lsiz,) = struct.unpack(">H", fp.read(2))
    if lsiz < 41:  # a 16-bit length: at most 64 KiB is read
        return None
    siz = fp.read(lsiz - 2)
    if len(siz) != lsiz - 2:
        return None
    width, height, x0, y0, tw, th, tx0, ty0 = struct.unpack(">8I", siz[2:34])
    (components,) = struct.unpack(">H", siz[34:36])
    if not 1 <= components <= (len(siz) - 36) // 3:
        return None
    depth = max((siz[36 + 3 * c] & 0x7F) + 1 for c in range(components))
    for _ in range(_MAX_MARKERS):
        marker, length = struct.unpack(">HH", fp.read(4))
        if marker in (_SOT, _SOD) or length < 2:
            return None
        if marker == _COD:
            cod = fp.read(length - 2)
            if len(cod) < 6:
                return None
            if not (x0 < width and y0 < height and tw and th and tx0 <= x0 and ty0 <= y0):
                return None
            return Codestream(
                tile_width=tw,
                tile_height=th,
                tile_x=tx0,
                tile_y=ty0,
                image_x=x0,
                image_y=y0,
                levels=cod[5],
                components=components,
                depth=depth,
                nbytes=nbytes,
            )
        fp.seek(length - 2, io.SEEK_CUR)
    return None


def _largest_tile(fp: IO[bytes], nbytes: int | None) -> int | None:
    """From just past COD: the most compressed bytes any one tile has (its tile-parts' lengths
    added up: what OpenJPEG reads into memory before decoding it), from the SOT markers, each
    found from the one before by its length; ``None`` when a tile-part's length is not given
    (0: up to the end) or leads nowhere, or there are more than :data:`_MAX_PARTS`."""
    for _ in range(_MAX_MARKERS):  # the rest of the main header
        marker, length = struct.unpack(">HH", fp.read(4))
        if marker == _SOT:
            break
        if length < 2:
            return None
        fp.seek(length - 2, io.SEEK_CUR)
    else:
        return None
    at = fp.tell() - 4
    tiles: dict[int, int] = {}
    for _ in range(_MAX_PARTS):
        fp.seek(at)
        head = fp.read(12)
        if len(head) < 2 or head[:2] == b"\xff\xd9":  # the end of the codestream
            return max(tiles.values()) if tiles else None
        if len(head) < 12:
            return None
        marker, _, index, part = struct.unpack(">HHHI", head[:10])
        if marker != _SOT or part < 14:
            return None
        tiles[index] = tiles.get(index, 0) + part
        at += part
        if not _before_end(at, nbytes):
            return None
    return None


def _before_end(at: int, nbytes: int | None) -> bool:
    """Whether offset ``at`` is one a walk may seek to: within the file (its end included)."""
    return at <= (nbytes if nbytes is not None else _MAX_OFFSET)
