"""What a cache tier stores, and where: the one encoding of an entry, with its integrity check.

A :class:`Slot` names one entry: its source (:func:`source_key` of the backend and native
identifier, so a purge of one source finds everything made from it) and its name (a rendered
image's plan key, or ``facts``). Memory keeps values as they are; the disk and Redis tiers keep
them as bytes made by :func:`encode` and read back by :func:`examine`::

    MAGIC | kind, expiry, slot digest, media type length, body length, CRC-32 | media | body

The CRC covers the header, the media type and the body, and the slot digest binds the entry to
the slot it was written for. Bytes that are not a value of their slot are :class:`Rejected`,
with the reason (:data:`REASONS`): torn by a crash, damaged, written by something else
(``damaged``), an intact entry of another slot copied, linked or written under this name
(``misplaced``), facts this release cannot read (``unreadable``); the tiers add their own (a
disk entry that is no regular file, one larger than the tier keeps) and so do the facade and
the stages after it (facts that fail the backend check, a value the image contradicts). An
entry past its expiry is only a miss (``None``). :func:`header` reads an entry's lengths from
its fixed part alone, so a reader can take exactly that many bytes and no more, and
:func:`examine_parts` checks an entry read in its parts (a disk read hands the body on as it
was read, never copied).
Facts travel as JSON (``model.facts.to_json``; ``from_json`` checks every field's type) and
are checked again by the facade like a backend's. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass

from iiif_shim.model.facts import SourceInfo, from_json, to_json
from iiif_shim.model.plan import Rendered

MAGIC = b"IIIFSHIM\x02"
_HEAD = struct.Struct(">Bd16sHQI")  # kind, expires, slot digest, media length, body length, CRC
_IMAGE, _FACTS = 1, 2
_FACTS_MEDIA = b"application/json"
_SOURCE_RE = re.compile(r"[0-9a-f]{32}")
_NAME_RE = re.compile(r"[0-9a-f]{64}|facts")
_MEDIA_RE = re.compile(rb"[a-z]+/[a-z0-9.+-]+")
FACTS = "facts"
ENTRY_SLACK = 64 * 1024  # bytes an encoded entry may take past the image it holds (its header)
HEADER_SIZE = len(MAGIC) + _HEAD.size  # the fixed part of an entry, before its media type

Entry = Rendered | SourceInfo

# Why stored bytes are not a value of their slot (the ``reason`` of a Rejected, and of the
# iiif_shim_cache_rejected_total metric), with what an operator reads in the log.
DAMAGED, MISPLACED, UNREADABLE = "damaged", "misplaced", "unreadable"
NOT_A_FILE, OVERSIZE, UNUSABLE, CONTRADICTED = "not_a_file", "oversize", "unusable", "contradicted"
REASONS = {
    DAMAGED: "not a whole, intact entry: torn, damaged or written by something else",
    MISPLACED: "an intact entry of another slot, copied, linked or written under this name",
    UNREADABLE: "facts this release cannot read",
    NOT_A_FILE: "not a regular file of the cache folder: a link, a pipe or a device",
    OVERSIZE: "larger than the tier keeps",
    UNUSABLE: "facts this backend would not report (they fail its check, or are of another type)",
    CONTRADICTED: "contradicted by what was made from it later",
}


@dataclass(frozen=True)
class Rejected:
    """Stored bytes that are not a value of their slot, and why (a key of :data:`REASONS`)."""

    reason: str


def source_key(backend: str, native_id: str) -> str:
    """The name of one source in every cache tier: 32 hex digits of a hash of the backend and
    its native identifier (so it fits any file name and says nothing about the identifier)."""
    return hashlib.sha256(f"{backend}\0{native_id}".encode()).hexdigest()[:32]


def valid_source(text: str) -> bool:
    """Whether ``text`` is shaped like a :func:`source_key`."""
    return _SOURCE_RE.fullmatch(text) is not None


def valid_name(text: str) -> bool:
    """Whether ``text`` is shaped like a slot's name (a plan key, or :data:`FACTS`)."""
    return _NAME_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class Slot:
    """Where one entry lives: ``source`` (a :func:`source_key`) and ``name`` (a plan key for a
    rendered image, :data:`FACTS` for the source's facts)."""

    source: str
    name: str

    def __post_init__(self) -> None:
        if not (valid_source(self.source) and valid_name(self.name)):
            raise ValueError("not a cache slot")

    @property
    def facts(self) -> bool:
        return self.name == FACTS

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(f"{self.source}:{self.name}".encode()).digest()[:16]


def encode(slot: Slot, value: Entry, expires: float = 0.0) -> bytes:
    """``value`` as the bytes a tier stores for ``slot`` (``expires``: epoch seconds, 0 never)."""
    if isinstance(value, SourceInfo):
        kind, media = _FACTS, _FACTS_MEDIA
        body = json.dumps(to_json(value), separators=(",", ":")).encode()
    else:
        kind, media, body = _IMAGE, value.media_type.encode("ascii"), value.body
    crc = _checksum(kind, expires, slot.digest, media, body)
    return MAGIC + _HEAD.pack(kind, expires, slot.digest, len(media), len(body), crc) + media + body


def _checksum(kind: int, expires: float, digest: bytes, media: bytes, body: bytes) -> int:
    """The CRC-32 of an entry's header (with the CRC field 0), media type and body."""
    head = _HEAD.pack(kind, expires, digest, len(media), len(body), 0)
    return zlib.crc32(body, zlib.crc32(media, zlib.crc32(head)))


@dataclass(frozen=True)
class Header:
    """What the fixed part of an entry states (read before the rest, to read no more)."""

    kind: int
    expires: float
    digest: bytes
    media_length: int
    body_length: int
    crc: int

    @property
    def size(self) -> int:
        """The whole entry's length."""
        return HEADER_SIZE + self.media_length + self.body_length


def header(head: bytes) -> Header | None:
    """What the entry whose first :data:`HEADER_SIZE` bytes are ``head`` states, or ``None``
    when ``head`` is not the start of an entry."""
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        return None
    return Header(*_HEAD.unpack_from(head, len(MAGIC)))


def entry_size(head: bytes) -> int | None:
    """The whole length of the entry whose first :data:`HEADER_SIZE` bytes are ``head``, as its
    header states it, or ``None`` when ``head`` is not the start of an entry."""
    found = header(head)
    return None if found is None else found.size


def examine(slot: Slot, data: bytes, now: float) -> Entry | Rejected | None:
    """The value ``data`` (a whole entry) holds for ``slot``; :class:`Rejected` when it is not
    a whole, intact entry of this slot of the kind the slot holds; ``None`` when it is one,
    past its expiry."""
    found = header(data)
    if found is None or found.size != len(data):
        return Rejected(DAMAGED)
    media_end = HEADER_SIZE + found.media_length
    return examine_parts(slot, found, data[HEADER_SIZE:media_end], data[media_end:], now)


def examine_parts(
    slot: Slot, head: Header, media: bytes, body: bytes, now: float
) -> Entry | Rejected | None:
    """:func:`examine` of an entry read in its parts (the body is used as it is, never
    copied): ``head`` as :func:`header` read it, then its media type and body."""
    if (len(media), len(body)) != (head.media_length, head.body_length):
        return Rejected(DAMAGED)
    if _checksum(head.kind, head.expires, head.digest, media, body) != head.crc:
        return Rejected(DAMAGED)
    if head.digest != slot.digest:
        return Rejected(MISPLACED)
    if head.expires and head.expires <= now:
        return None
    if slot.facts:
        if head.kind != _FACTS or media != _FACTS_MEDIA:
            return Rejected(DAMAGED)
        try:
            return from_json(json.loads(body))
        except (ValueError, TypeError, KeyError, RecursionError):  # not facts this release reads
            return Rejected(UNREADABLE)
    if head.kind != _IMAGE or not _MEDIA_RE.fullmatch(media):
        return Rejected(DAMAGED)
    return Rendered(body=body, media_type=media.decode("ascii"))
