"""Which identifiers and object names an export can write as files, and where: pure.

A web server such as nginx percent-decodes a request's path (``%2F`` too), merges ``//`` and
resolves ``.`` and ``..`` before it looks for a file. So an identifier lives on disk as its
decoded self (``a/b c`` at ``iiif/3/a/b c/``), and one that such a server cannot reach as
itself is refused: an empty segment (leading, trailing or doubled ``/``), a ``.`` or ``..``
segment, a NUL character, a segment longer than the filesystem's names, a path longer than its
paths. So is a name whose segment falls where another exported name keeps its own files
(``x/full`` or ``x/info.json`` next to ``x``; an object ``y/manifest`` next to ``y``): the
longer one is refused, the other written. Object names starting ``collection`` are refused:
``presentation/{3|2}/collection`` holds the collections.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# What an image's folder holds at its top: its info.json and the regions of its files.
_IMAGE_ENTRY = re.compile(r"info\.json|full|square|pct:.*|\d+,\d+,\d+,\d+")
# The longest name of a file written below a name's folder (an image's, for its paths' depth).
_DEEPEST = len("/0,0,100000,100000/100000,100000/0/default.jpg") + len(".export-123456789.part")
NAME_MAX = 255  # bytes of one file name (Linux, most filesystems)
PATH_MAX = 4096  # bytes of a path


def image_entry(segment: str) -> bool:
    """Whether ``segment`` is a name an image's folder holds (a file or a region's folder)."""
    return _IMAGE_ENTRY.fullmatch(segment) is not None


def object_entry(segment: str) -> bool:
    """Whether ``segment`` is a name an object's folder holds (its manifest)."""
    return segment == "manifest"


def unfit(name: str, root: str) -> str | None:
    """Why ``name`` cannot be a folder below ``root`` (a path on disk) that a web server finds
    by its decoded URL, or ``None``."""
    if "\x00" in name:
        return "holds a NUL character, which no file name can"
    segments = name.split("/")
    if any(s == "" for s in segments):
        return "has an empty segment (a leading, trailing or doubled '/'), which web servers merge"
    if any(s in (".", "..") for s in segments):
        return "has a '.' or '..' segment, which web servers resolve away"
    long = next((s for s in segments if len(s.encode()) > NAME_MAX), None)
    if long is not None:
        size = len(long.encode())
        return f"has a segment of {size} bytes, more than a file name holds ({NAME_MAX})"
    size = len(root.encode()) + 1 + len(name.encode()) + _DEEPEST
    if size > PATH_MAX:
        return f"makes paths of {size} bytes, more than the filesystem takes ({PATH_MAX})"
    return None


def collisions(names: Iterable[str], entry: Callable[[str], bool]) -> dict[str, str]:
    """The names (of one kind) whose folder would fall inside another's files: name -> why.
    ``entry``: whether a segment is one a name's folder holds itself."""
    chosen = set(names)
    found: dict[str, str] = {}
    for name in chosen:
        segments = name.split("/")
        for k in range(1, len(segments)):
            prefix = "/".join(segments[:k])
            if prefix in chosen and entry(segments[k]):
                found[name] = (
                    f"its segment {segments[k]!r} is where the files of {prefix!r} are "
                    "(exported too)"
                )
                break
    return found


def object_unfit(name: str, root: str) -> str | None:
    """Why object ``name`` cannot have its manifests written below ``root``, or ``None``."""
    if name == "collection" or name.startswith("collection/"):
        return "starts with 'collection', where the collections are written"
    return unfit(name, root)
