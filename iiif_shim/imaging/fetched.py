"""What a backend delivers to the image engine: a local file, encoded bytes, or pixels it
assembled itself; and :class:`Parts`, the parts of a remote file fetched so far (merged as they
come), which a header is read from through :class:`Ranges` without fetching the file."""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from iiif_shim.iiif.resolve import Box


@dataclass(frozen=True)
class Fetched:
    """What a backend delivered: a local file (opened lazily by the engine), encoded bytes, or
    pixels it assembled itself (tiles stitched by a pyramid backend); or, for reading a header
    only (``pillow.read_header``), a ``reader``: a file-like object such as :class:`Ranges`.

    For a file, ``page`` and ``window`` say which part of it is wanted, so a huge master is
    never decoded whole when its format stores what is needed apart: ``page`` is the image
    inside the file (a level of a pyramidal TIFF, 0 for the first), ``window`` the rectangle of
    that page's pixels (``None``: all of it). What is delivered is then that rectangle.

    ``keep`` is what must live while the file is read (a temporary file holding an upstream
    body, which is gone with it): copies of this object keep it too. Such a file is the
    backend's answer as much as ``data`` would be (:attr:`local` tells them apart): the same
    bytes give the same errors, whatever their size.
    """

    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    described: str = ""  # for errors: which backend call produced it
    page: int = 0
    window: Box | None = None
    reader: io.BufferedIOBase | None = None
    keep: Any = None

    @property
    def local(self) -> bool:
        """A local master (a file of this server), not an upstream answer held in a file."""
        return self.path is not None and self.keep is None

    def __post_init__(self) -> None:
        forms = (self.path, self.data, self.image, self.reader)
        if sum(x is not None for x in forms) != 1:
            raise ValueError("Fetched needs exactly one of path, data, image or reader")
        if self.path is None and (self.page or self.window is not None):
            raise ValueError("page and window are parts of a file")


class Missing(Exception):
    """A read of a :class:`Ranges` reached bytes not fetched yet: the first absent span, ``size``
    bytes at ``start`` (fetch them, then read again from the beginning); ``start`` is ``None``
    when the end of a file of unknown size was asked for (only the whole file tells). Not an
    ``OSError``: what reads the file does not take it for a broken file."""

    def __init__(self, start: int | None, size: int) -> None:
        where = "the end" if start is None else f"bytes {start}-{start + size - 1}"
        super().__init__(f"{where} of the file: not fetched")
        self.start = start
        self.size = size


class Parts:
    """The parts of a remote file of ``size`` bytes (``None``: not known) fetched so far, kept
    as sorted, disjoint intervals: a part that touches or overlaps another is merged with it
    when it is added, so any read of known bytes lies in one of them."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self._starts: list[int] = []
        self._data: list[bytes] = []

    def add(self, start: int, data: bytes) -> None:
        """Bytes ``data`` of the file from ``start`` (what was known there already is kept)."""
        if not data:
            return
        end = start + len(data)
        i = bisect.bisect_left(self._starts, start)
        if i and self._starts[i - 1] + len(self._data[i - 1]) >= start:
            i -= 1  # the part before touches it
        j = i
        while j < len(self._starts) and self._starts[j] <= end:
            j += 1  # parts from i to j touch or overlap it
        if i < j:
            first, last = self._starts[i], self._starts[j - 1] + len(self._data[j - 1])
            lo, hi = min(first, start), max(last, end)
            merged = bytearray(hi - lo)
            merged[start - lo : end - lo] = data
            for k in range(i, j):  # what was known stays as it was
                at = self._starts[k] - lo
                merged[at : at + len(self._data[k])] = self._data[k]
            start, data = lo, bytes(merged)
        self._starts[i:j] = [start]
        self._data[i:j] = [data]

    def read(self, pos: int, size: int) -> bytes:
        """``size`` bytes from ``pos`` (fewer at the end of the file); :class:`Missing` for
        the first span of them not fetched yet."""
        if self.size is not None:
            size = max(0, min(size, self.size - pos))
        if size == 0:
            return b""
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0:
            start, data = self._starts[i], self._data[i]
            if pos < start + len(data):
                if pos + size <= start + len(data):
                    return data[pos - start : pos + size - start]
                gap = start + len(data)  # known up to here; the rest is the next part's
                upto = self._starts[i + 1] if i + 1 < len(self._starts) else pos + size
                raise Missing(gap, min(pos + size, upto) - gap)
        upto = self._starts[i + 1] if i + 1 < len(self._starts) else pos + size
        raise Missing(pos, min(pos + size, upto) - pos)

    @property
    def fetched(self) -> int:
        """Bytes known."""
        return sum(len(d) for d in self._data)


class Ranges(io.BufferedIOBase):
    """A reader of a remote file of which :class:`Parts` are known. Reading known bytes gives
    them; reading past the end gives nothing; reading anything else raises :class:`Missing`.
    Read in a thread, never on the loop."""

    def __init__(self, parts: Parts) -> None:
        super().__init__()
        self.parts = parts
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self.parts.size is None:
                raise Missing(None, 0)  # the end is not known: nothing to seek from
            offset += self.parts.size
        if offset < 0:
            raise ValueError("negative seek position")
        self._pos = offset
        return offset

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            if self.parts.size is None:
                raise Missing(None, 0)
            size = self.parts.size - self._pos
        data = self.parts.read(self._pos, size)
        self._pos += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)
