"""Which identifiers and object names an export can write as files, and where: pure.

A web server such as nginx percent-decodes a request's path (``%2F`` too), merges ``//`` and
resolves ``.`` and ``..`` before it looks for a file. So an identifier lives on disk as its
decoded self (``a/b c`` at ``iiif/3/a/b c/``), and one that such a server cannot reach as
itself is refused: an empty segment (leading, trailing or doubled ``/``), a ``.`` or ``..``
segment, a NUL character, a segment longer than the filesystem's names, a path longer than its
paths. So is a name whose segment falls where another exported name keeps its own files
(``x/full`` or ``x/info.json`` next to ``x``; an object ``y/manifest`` next to ``y``): the
longer one is refused, the other written. The object names ``collection`` and
``collection/...`` are refused: ``presentation/{3|2}/collection`` holds the collections (a
source's is named after it: the configuration lets a source's name hold letters, digits, ``_``
and ``-`` alone).

Names are claimed one by one, as a run meets them (:class:`Claims`, seeded with what the
folder holds already): a name is refused when it falls where a name claimed before keeps its
files, or the other way round (``x/full`` after ``x``; ``x`` after ``x/full``), and when it
differs from one claimed before only by case or Unicode normalisation (``Page`` and ``page``,
NFC and NFD ``é``): on a case-insensitive or normalising target (macOS, Windows, exFAT, SMB,
some buckets' tools) both would be one file. The later one is refused, with the earlier
named (both escaped, ``'cafe\\u0301'``, when they differ only by normalisation and would look
the same). A name refused after all (an object whose image is refused, an image whose facts
cannot be read) releases its claims: it reserves no name it never wrote.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable

# What an image's folder holds at its top: its info.json and the regions of its files.
_IMAGE_ENTRY = re.compile(r"info\.json|full|square|pct:.*|\d+,\d+,\d+,\d+")
# The longest name of a file written below a name's folder (an image's, for its paths' depth).
_DEEPEST = len("/0,0,100000,100000/100000,100000/0/default.jpg") + len(".export-123456789.part")
NAME_MAX = 255  # bytes of one file name (Linux, most filesystems), unless the folder says
PATH_MAX = 4096  # bytes of a path, unless the folder says


def limits(folder: str) -> tuple[int, int]:
    """(bytes of a file name, bytes of a path) on the filesystem of ``folder`` (an existing
    folder or one of its parents): what it says (eCryptfs names hold 143), else the usual."""
    path = folder
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return os.pathconf(path, "PC_NAME_MAX"), os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):
        return NAME_MAX, PATH_MAX


def image_entry(segment: str) -> bool:
    """Whether ``segment`` is a name an image's folder holds (a file or a region's folder)."""
    return _IMAGE_ENTRY.fullmatch(segment) is not None


def object_entry(segment: str) -> bool:
    """Whether ``segment`` is a name an object's folder holds (its manifest)."""
    return segment == "manifest"


def unfit(name: str, root: str, name_max: int = NAME_MAX, path_max: int = PATH_MAX) -> str | None:
    """Why ``name`` cannot be a folder below ``root`` (a path on disk) that a web server finds
    by its decoded URL, or ``None``."""
    if "\x00" in name:
        return "holds a NUL character, which no file name can"
    segments = name.split("/")
    if any(s == "" for s in segments):
        return "has an empty segment (a leading, trailing or doubled '/'), which web servers merge"
    if any(s in (".", "..") for s in segments):
        return "has a '.' or '..' segment, which web servers resolve away"
    long = next((s for s in segments if len(s.encode()) > name_max), None)
    if long is not None:
        size = len(long.encode())
        return f"has a segment of {size} bytes, more than a file name holds ({name_max})"
    size = len(root.encode()) + 1 + len(name.encode()) + _DEEPEST
    if size > path_max:
        return f"makes paths of {size} bytes, more than the filesystem takes ({path_max})"
    return None


def folded(name: str) -> str:
    """``name`` as a case-insensitive, normalising filesystem sees it (NFC, case folded)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def shown(name: str, other: str) -> tuple[str, str]:
    """``name`` and ``other`` quoted for a line: escaped (``'cafe\\u0301'``) when they would
    look the same as written (NFC and NFD spellings), so the difference shows."""
    if repr(name) == repr(other) or (
        name != other and unicodedata.normalize("NFC", name) == unicodedata.normalize("NFC", other)
    ):
        return ascii(name), ascii(other)
    return repr(name), repr(other)


class Claims:
    """The names of one kind (images, or objects) a folder holds or a run writes; see the
    module's text. ``entry``: whether a segment is one a name's folder holds itself. A name is
    held by each claim of it until that claim is released (a name refused after all: its
    holders release it, and it reserves nothing)."""

    def __init__(self, entry: Callable[[str], bool]) -> None:
        self.entry = entry
        self.names: dict[str, str] = {}  # folded name -> the name
        self.holders: dict[str, int] = {}  # folded name -> the claims holding it
        # folded prefix -> the names with an entry segment after it (in the order claimed)
        self.below: dict[str, dict[str, None]] = {}

    def claim(self, name: str) -> str | None:
        """``name`` claimed (once more, when claimed already), or why it collides with one
        claimed before (then nothing is claimed)."""
        key = folded(name)
        there = self.names.get(key)
        if there == name:
            self.holders[key] += 1
            return None
        if there is not None:
            mine, theirs = shown(name, there)
            return (
                f"differs from {theirs} (exported too, or already in the folder) only by case "
                f"or Unicode normalisation ({mine} here): one file on case-insensitive targets"
            )
        segments = key.split("/")
        originals = name.split("/")
        for k in range(1, len(segments)):
            prefix = "/".join(segments[:k])
            if prefix in self.names and self.entry(segments[k]):
                return (
                    f"its segment {originals[k]!r} is where the files of "
                    f"{self.names[prefix]!r} are (exported too, or already in the folder)"
                )
        if self.below.get(key):
            return (
                f"its files would be where {next(iter(self.below[key]))!r} is (exported too, or "
                "already in the folder)"
            )
        self.names[key] = name
        self.holders[key] = 1
        for k in range(1, len(segments)):
            if self.entry(segments[k]):
                self.below.setdefault("/".join(segments[:k]), {})[name] = None
        return None

    def release(self, name: str) -> None:
        """One claim of ``name`` given back; the name is free once none holds it."""
        key = folded(name)
        if self.names.get(key) != name:
            return
        self.holders[key] -= 1
        if self.holders[key] > 0:
            return
        del self.names[key], self.holders[key]
        segments = key.split("/")
        for k in range(1, len(segments)):
            prefix = "/".join(segments[:k])
            held = self.below.get(prefix)
            if held is not None:
                held.pop(name, None)
                if not held:
                    del self.below[prefix]


def object_unfit(name: str, root: str) -> str | None:
    """Why object ``name`` cannot have its manifests written below ``root``, or ``None``."""
    if name == "collection" or name.startswith("collection/"):
        return "starts with 'collection', where the collections are written"
    return unfit(name, root)
