"""Encoding: every format the shim writes comes out as that format, and Pillow's encoders are
given a real file, the only target for which they release the interpreter's lock
(``ImageFile._save`` writes through ``encode_to_file`` when the target has a descriptor, and
loops on ``encode`` holding the lock otherwise), so that image threads encode side by side. The
gain is measured in docs/performance.md, not here."""

from __future__ import annotations

import errno
import io
import os
from typing import Any

import pytest
from PIL import Image

from iiif_shim.iiif.profile import Format
from iiif_shim.imaging import pillow

_OPENED = {Format.JPG: "JPEG", Format.PNG: "PNG", Format.WEBP: "WEBP", Format.TIF: "TIFF"}
_OPENED |= {Format.GIF: "GIF", Format.JP2: "JPEG2000"}


_WRITABLE = sorted(pillow.writable_formats(), key=lambda f: str(f.value))


@pytest.mark.parametrize("fmt", _WRITABLE)
def test_each_format_is_encoded_into_a_file_with_a_descriptor(
    fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets: list[Any] = []
    save = Image.Image.save

    def watched(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        targets.append(fp)
        descriptor = fp.fileno()  # a BytesIO raises io.UnsupportedOperation here
        assert isinstance(descriptor, int)
        save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", watched)
    im = Image.new("RGB", (96, 64), (200, 30, 30))
    data = pillow.encode(im, fmt, 85)
    assert len(targets) == 1 and targets[0].closed  # given back once read
    if fmt in _OPENED:
        with Image.open(io.BytesIO(data)) as out:
            assert out.format == _OPENED[fmt] and out.size == (96, 64)
            pixel = out.convert("RGB").getpixel((48, 32))
            assert isinstance(pixel, tuple)
            assert all(abs(a - b) <= 24 for a, b in zip(pixel, (200, 30, 30), strict=True))
    else:
        assert data.startswith(b"%PDF")


@pytest.mark.parametrize("refusal", [errno.EACCES, errno.ENOSYS, errno.EPERM])
def test_encoding_works_where_memfd_create_is_refused(
    refusal: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vm.memfd_noexec=2`` (EACCES), a seccomp profile (ENOSYS, EPERM): each encode falls
    back to a temporary file, still a file with a descriptor, and the bytes are the same."""
    im = Image.new("RGB", (96, 64), (30, 200, 30))
    expected = pillow.encode(im, Format.JPG, 85)
    asked: list[str] = []

    def refuse(name: str, flags: int = 0) -> int:
        asked.append(name)
        raise OSError(refusal, os.strerror(refusal))

    targets: list[Any] = []
    save = Image.Image.save

    def watched(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        targets.append(fp)
        assert isinstance(fp.fileno(), int)
        save(self, fp, *args, **kwargs)

    monkeypatch.setattr(os, "memfd_create", refuse)
    monkeypatch.setattr(Image.Image, "save", watched)
    descriptors = len(os.listdir("/proc/self/fd"))
    assert pillow.encode(im, Format.JPG, 85) == expected
    assert asked and len(targets) == 1 and targets[0].closed
    assert len(os.listdir("/proc/self/fd")) == descriptors
