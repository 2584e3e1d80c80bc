"""The format and size of an encoded JPEG or PNG, read from its first bytes directly: a few
markers, bounded, never trusting a length that leads outside the data (Pillow's ``open`` costs
several times more). Used on the event loop, for answers small enough to check there."""

from __future__ import annotations

# JPEG start-of-frame markers (baseline, extended, progressive); markers read before giving up.
_SOF = frozenset({0xC0, 0xC1, 0xC2})


_MAX_MARKERS = 64


def header(data: bytes) -> tuple[str, int, int] | None:
    """Format, width and height from the first bytes of a baseline or progressive JPEG or a
    PNG, else ``None``: a few markers read directly (Pillow's ``open`` costs several times
    more), bounded, never trusting a length that leads outside ``data``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return "PNG", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    for _ in range(_MAX_MARKERS):
        if at + 4 > len(data) or data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF:
            if length < 8 or at + 9 > len(data):
                return None
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return ("JPEG", width, height) if width and height else None
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan before any frame
            return None
        at += 2 + length
    return None
