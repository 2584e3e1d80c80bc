"""The header reader that lets a backend's tile pass through without the thread pool: it
agrees with Pillow on what it reads, says ``None`` on anything else, and never raises."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from iiif_shim.imaging.headers import header


def _encode(size: tuple[int, int], fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("JPEG", {"icc_profile": b"\0" * 70000}),  # APP2 segments before the frame
        ("JPEG", {"exif": b"Exif\0\0" + b"\0" * 4000}),
        ("PNG", {}),
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (256, 256), (511, 300), (6000, 17)])
def test_agrees_with_pillow(size: tuple[int, int], fmt: str, options: dict[str, object]) -> None:
    data = _encode(size, fmt, **options)
    with Image.open(io.BytesIO(data)) as im:
        assert header(data) == (im.format, *im.size)


def test_anything_else_is_none() -> None:
    assert header(_encode((20, 10), "GIF")) is None
    assert header(_encode((20, 10), "WEBP")) is None
    assert header(b"<html>error</html>") is None
    jpeg = _encode((64, 48), "JPEG")
    assert header(jpeg[:4]) is None  # cut before the frame
    assert header(jpeg[:2] + b"\xff\xe0\xff\xff") is None  # a length past the end


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises(tail: bytes) -> None:
    for start in (b"\xff\xd8", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b""):
        result = header(start + tail)
        assert result is None or (result[1] >= 0 and result[2] >= 0)
