"""What a cache tier stores, and where: the one encoding of an entry, with its integrity check.

A :class:`Slot` names one entry: its source (:func:`source_key` of the backend and native
identifier, so a purge of one source finds everything made from it) and its name (a rendered
image's plan key, or ``facts``). Memory keeps values as they are; the disk and Redis tiers keep
them as bytes made by :func:`encode` and read back by :func:`decode`::

    MAGIC | kind, expiry, slot digest, media type length, body length, CRC-32 | media | body

The CRC covers the header, the media type and the body, and the slot digest binds the entry to
the slot it was written for: an entry torn by a crash, damaged on disk, written by something
else, copied under another name or past its expiry is not a value but a miss (``None``).
Facts travel as JSON (``model.facts.to_json``) and are checked again by their reader like a
backend's. Pure: no I/O.
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

Entry = Rendered | SourceInfo


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


def decode(slot: Slot, data: bytes, now: float) -> Entry | None:
    """The value ``data`` holds for ``slot``, or ``None`` when it is not a whole, intact, fresh
    entry of this slot (of the kind the slot holds)."""
    start = len(MAGIC) + _HEAD.size
    if len(data) < start or not data.startswith(MAGIC):
        return None
    kind, expires, digest, media_len, body_len, crc = _HEAD.unpack_from(data, len(MAGIC))
    media = data[start : start + media_len]
    body = data[start + media_len :]
    if len(body) != body_len or digest != slot.digest or (expires and expires <= now):
        return None
    if _checksum(kind, expires, digest, media, body) != crc:
        return None
    if slot.facts:
        if kind != _FACTS or media != _FACTS_MEDIA:
            return None
        try:
            return from_json(json.loads(body))
        except Exception:  # intact but not facts this release reads: a miss
            return None
    if kind != _IMAGE or not _MEDIA_RE.fullmatch(media):
        return None
    return Rendered(body=body, media_type=media.decode("ascii"))
