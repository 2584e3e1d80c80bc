"""What a backend delivers to the image engine: a local file, encoded bytes, or pixels it
assembled itself; and :class:`Ranges`, the parts of a remote file known so far, which a header is
read from without fetching the file."""

from __future__ import annotations

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
    body, which is gone with it): copies of this object keep it too.
    """

    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    described: str = ""  # for errors: which backend call produced it
    page: int = 0
    window: Box | None = None
    reader: io.BufferedIOBase | None = None
    keep: Any = None

    def __post_init__(self) -> None:
        forms = (self.path, self.data, self.image, self.reader)
        if sum(x is not None for x in forms) != 1:
            raise ValueError("Fetched needs exactly one of path, data, image or reader")
        if self.path is None and (self.page or self.window is not None):
            raise ValueError("page and window are parts of a file")


class Missing(Exception):
    """A read of a :class:`Ranges` reached bytes not fetched yet: ``size`` bytes at ``start``
    (fetch them, then read again from the beginning). Not an ``OSError``: what reads the file
    does not take it for a broken file."""

    def __init__(self, start: int, size: int) -> None:
        super().__init__(f"bytes {start}-{start + size - 1} are not fetched")
        self.start = start
        self.size = size


class Ranges(io.BufferedIOBase):
    """A remote file of ``size`` bytes (``None``: not known) of which the ``parts`` (offset ->
    bytes) are known. Reading known bytes gives them; reading past the end gives nothing;
    reading anything else raises :class:`Missing`. Read in a thread, never on the loop."""

    def __init__(self, parts: dict[int, bytes], size: int | None) -> None:
        super().__init__()
        self.parts = parts
        self.size = size
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
            if self.size is None:
                raise Missing(0, 1)  # the end is not known: nothing to seek from
            offset += self.size
        if offset < 0:
            raise ValueError("negative seek position")
        self._pos = offset
        return offset

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if self.size is not None else None
        if size is None or size < 0:
            if end is None:
                raise Missing(self._pos, 1)
            size = end - self._pos
        if end is not None:
            size = max(0, min(size, end - self._pos))
        if size == 0:
            return b""
        for start, data in self.parts.items():
            if start <= self._pos < start + len(data):
                offset = self._pos - start
                if offset + size > len(data):  # runs past what is known
                    raise Missing(start + len(data), offset + size - len(data))
                self._pos += size
                return data[offset : offset + size]
        raise Missing(self._pos, size)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)
