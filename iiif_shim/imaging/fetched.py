"""What a backend delivers to the image engine: a local file, encoded bytes, or pixels it
assembled itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from iiif_shim.iiif.resolve import Box


@dataclass(frozen=True)
class Fetched:
    """What a backend delivered: a local file (opened lazily by the engine), encoded bytes, or
    pixels it assembled itself (tiles stitched by a pyramid backend).

    For a file, ``page`` and ``window`` say which part of it is wanted, so a huge master is
    never decoded whole when its format stores what is needed apart: ``page`` is the image
    inside the file (a level of a pyramidal TIFF, 0 for the first), ``window`` the rectangle of
    that page's pixels (``None``: all of it). What is delivered is then that rectangle.
    """

    path: Path | None = None
    data: bytes | None = None
    image: Image.Image | None = None
    described: str = ""  # for errors: which backend call produced it
    page: int = 0
    window: Box | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.path, self.data, self.image)) != 1:
            raise ValueError("Fetched needs exactly one of path, data or image")
        if self.path is None and (self.page or self.window is not None):
            raise ValueError("page and window are parts of a file")
