"""Writing a PDF of JPEG pages to a binary file as the pages arrive (a "download as PDF"
rendering).

The pages are JPEGs the server already produced; each is embedded as it is (an Image XObject
with ``/Filter /DCTDecode``, no decoding or re-encoding) and written out at once, so memory is
bounded by the one page in hand: the writer keeps only the byte offset of every object it
wrote (for the cross-reference table) and a page count. The page tree, the document
information and the cross-reference table are written by :meth:`PdfWriter.close`.

Object numbers: 1 is the catalog (written first), 2 the page tree (reserved up front, written
at close, when its kids are known), then three per page (image, content stream, page), and
last the document information dictionary.

:func:`jpeg_size` reads a JPEG's width, height and component count from its frame header
without decoding it, for callers that hold only the bytes.
"""

from __future__ import annotations

import math
from typing import BinaryIO

__all__ = ["PdfWriter", "jpeg_size"]

_HEADER = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"  # the comment marks the file as binary
_CATALOG = 1
_PAGES = 2
_FIRST_PAGE_OBJECT = 3
_OBJECTS_PER_PAGE = 3  # image, content stream, page
_PRODUCER = "iiif-shim"
_COLOR_SPACES = {1: b"/DeviceGray", 3: b"/DeviceRGB"}

# Start-of-frame markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length: TEM and the restart markers RST0-RST7.
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


class PdfWriter:
    """Writes a PDF of JPEG pages to a binary file, one page at a time.

    The header and catalog are written at construction, every page by :meth:`add_jpeg` before
    it returns, the rest by :meth:`close`. ``out`` is written sequentially (it need not be
    seekable) and is not closed by the writer.
    """

    def __init__(self, out: BinaryIO, *, title: str | None = None, dpi: float = 150.0) -> None:
        if not (math.isfinite(dpi) and dpi > 0):
            raise ValueError(f"dpi must be a positive number, not {dpi!r}")
        self._out = out
        self._title = title
        self._dpi = dpi
        self._written = 0
        # _offsets[n - 1] is where object n starts; one int per object, never page data.
        self._offsets: list[int] = []
        self._pages = 0
        self._closed = False
        self._write(_HEADER)
        self._write_object(_CATALOG, b"<< /Type /Catalog /Pages %d 0 R >>" % _PAGES)
        self._offsets.append(0)  # the page tree's place, filled in by close()

    def add_jpeg(self, data: bytes, width: int, height: int, components: int = 3) -> None:
        """One page showing this JPEG (baseline or progressive) at its pixel size / dpi inches."""
        if self._closed:
            raise ValueError("the PDF is already closed")
        if not data.startswith(b"\xff\xd8"):
            raise ValueError("not a JPEG: the data does not start with the SOI marker FFD8")
        if width < 1 or height < 1:
            raise ValueError(f"a page needs a size of at least 1x1 pixels, not {width}x{height}")
        color_space = _COLOR_SPACES.get(components)
        if color_space is None:
            raise ValueError(
                f"JPEGs with {components} components are not supported (only 1: gray, 3: RGB)"
            )
        image = len(self._offsets) + 1
        content, page = image + 1, image + 2
        self._begin_object(image)
        self._write(
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s"
            b" /BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n"
            % (width, height, color_space, len(data))
        )
        self._write(data)
        self._write(b"\nendstream\nendobj\n")
        w, h = _number(width * 72 / self._dpi), _number(height * 72 / self._dpi)
        drawing = b"q %s 0 0 %s 0 0 cm /Im0 Do Q" % (w, h)
        self._write_object(
            content, b"<< /Length %d >>\nstream\n%s\nendstream" % (len(drawing), drawing)
        )
        self._write_object(
            page,
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s]"
            b" /Resources << /XObject << /Im0 %d 0 R >> >> /Contents %d 0 R >>"
            % (_PAGES, w, h, image, content),
        )
        self._pages += 1

    def close(self) -> int:
        """Writes the page tree, document information, xref and trailer; returns the total
        number of bytes written. Raises ValueError if no page was added (a PDF needs one)."""
        if self._closed:
            raise ValueError("the PDF is already closed")
        if self._pages == 0:
            raise ValueError("a PDF needs at least one page")
        self._closed = True
        kids = b" ".join(
            b"%d 0 R" % (_FIRST_PAGE_OBJECT + i * _OBJECTS_PER_PAGE + 2) for i in range(self._pages)
        )
        self._offsets[_PAGES - 1] = self._written
        self._write(
            b"%d 0 obj\n<< /Type /Pages /Kids [%s] /Count %d >>\nendobj\n"
            % (_PAGES, kids, self._pages)
        )
        info = len(self._offsets) + 1
        entries = [b"/Producer " + _text_string(_PRODUCER)]
        if self._title is not None:
            entries.insert(0, b"/Title " + _text_string(self._title))
        self._write_object(info, b"<< %s >>" % b" ".join(entries))
        xref = self._written
        size = len(self._offsets) + 1
        self._write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
        for offset in self._offsets:  # each entry exactly 20 bytes, the EOL being space + LF
            self._write(b"%010d 00000 n \n" % offset)
        self._write(
            b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (size, _CATALOG, info, xref)
        )
        return self._written

    def _write(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._written += len(chunk)

    def _begin_object(self, number: int) -> None:
        assert number == len(self._offsets) + 1, "objects are written in order"
        self._offsets.append(self._written)
        self._write(b"%d 0 obj\n" % number)

    def _write_object(self, number: int, body: bytes) -> None:
        self._begin_object(number)
        self._write(body + b"\nendobj\n")


def _number(value: float) -> bytes:
    """A PDF real: plain decimal notation (no exponent), at most 4 decimals."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return (text if text not in ("", "-0") else "0").encode("ascii")


def _text_string(text: str) -> bytes:
    """A PDF text string: printable ASCII as a literal string (backslash and parentheses
    escaped), anything else as UTF-16BE with a byte order mark, in hex."""
    if all(" " <= c <= "~" for c in text):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return b"(" + escaped.encode("ascii") + b")"
    encoded = b"\xfe\xff" + text.encode("utf-16-be", errors="replace")
    return b"<" + encoded.hex().upper().encode("ascii") + b">"


def jpeg_size(data: bytes) -> tuple[int, int, int]:
    """The (width, height, components) of a JPEG, read from its start-of-frame segment.

    Walks the marker segments from the SOI up to the first SOF (each step moves forward by at
    least two bytes, so the walk ends within ``len(data)`` steps); raises ValueError when the
    data is not a JPEG, is cut short, or has no usable frame header before the scan data.
    """
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG: the data does not start with the SOI marker FFD8")
    pos, end = 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise ValueError(f"not a JPEG: no marker at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # a marker may be preceded by fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE_MARKERS:
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            raise ValueError(f"not a JPEG: marker FF{marker:02X} before any frame header")
        if pos + 2 > end:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > end:
            raise ValueError(f"not a JPEG: segment FF{marker:02X} has a bad length {length}")
        if marker in _SOF_MARKERS:
            if length < 8:
                raise ValueError(f"not a JPEG: frame header of {length} bytes is too short")
            height = int.from_bytes(data[pos + 3 : pos + 5], "big")
            width = int.from_bytes(data[pos + 5 : pos + 7], "big")
            components = data[pos + 7]
            if width < 1 or height < 1 or components < 1:
                raise ValueError(
                    f"JPEG frame header gives an unusable size {width}x{height}x{components}"
                )
            return width, height, components
        pos += length
    raise ValueError("not a JPEG: the data ends before a frame header")
