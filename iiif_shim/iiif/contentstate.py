"""IIIF Content State API 1.0: the ``iiif-content`` parameter that opens a viewer at a resource.

Owns the encoding (JSON -> ``encodeURIComponent`` -> base64url -> no ``=`` padding) and the
reading of a parameter into a :class:`Target`: which manifest (or collection), which canvas,
which region of it, or which bare image service to show. Pure functions, no I/O: a URI is never
dereferenced here (the browser fetches what the viewer shows).

Accepted forms (spec section 2.2 and 3.1): a plain http(s) URI of a Manifest or Collection, or
of an image service / its ``info.json``; a content-state-encoded full Annotation (motivation
``contentState``); a content-state-encoded target object (Manifest, Collection, Canvas with
``partOf``, Range with ``partOf``, SpecificResource of a Canvas with a ``FragmentSelector``).
Unencoded JSON is accepted too (the ``data-iiif-content`` form), as viewers do. Everything else
raises ``ValueError`` with a message fit to show to the person who followed the link.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

MAX_LENGTH = 8192  # characters of the parameter as received
_ENCODE_URI_COMPONENT_SAFE = "!*'()"  # with quote's own "_.-~": what encodeURIComponent keeps
_BASE64URL_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_XYWH_RE = re.compile(r"xywh=(?:pixel:)?(\d{1,9}),(\d{1,9}),(\d{1,9}),(\d{1,9})")
_CONTAINERS = ("Manifest", "Collection")

Kind = Literal["manifest", "image"]


@dataclass(frozen=True)
class Target:
    """What a viewer should open: a manifest (or collection) and optionally one canvas and a
    region of it (x, y, w, h in canvas pixels), or a bare image service (its base URI, no
    ``/info.json``)."""

    manifest: str | None = None
    canvas: str | None = None
    region: tuple[int, int, int, int] | None = None
    image_service: str | None = None


def encode(state: dict[str, Any] | str) -> str:
    """Content-state-encode a JSON object (or JSON text) for a GET parameter."""
    text = state if isinstance(state, str) else json.dumps(state, separators=(",", ":"))
    uri_encoded = quote(text, safe=_ENCODE_URI_COMPONENT_SAFE)
    return base64.urlsafe_b64encode(uri_encoded.encode("ascii")).decode("ascii").rstrip("=")


def decode_text(param: str) -> str:
    """Undo content-state-encoding: restore padding, base64url-decode, percent-decode."""
    if not _BASE64URL_RE.fullmatch(param):
        raise ValueError(
            "not a content state: it is neither an http(s) URI nor base64url text "
            "(A-Z, a-z, 0-9, '-' and '_')"
        )
    body = param.rstrip("=")
    if len(body) % 4 == 1:
        raise ValueError("not a content state: its base64url text has an impossible length")
    padded = body + "=" * (-len(body) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a content state: its base64url text does not decode") from None
    if _BAD_PERCENT_RE.search(raw):
        raise ValueError("not a content state: a '%' in it starts no percent-escape")
    try:
        return unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError("not a content state: its percent-escapes are not UTF-8") from None


def decode(param: str, kind: Kind | None = None) -> Target:
    """Read an ``iiif-content`` value. ``kind`` says what a plain URI is (default: an image
    service when its path ends with ``/info.json``, else a manifest or collection).

    Raises ``ValueError`` naming what is wrong.
    """
    if len(param) > MAX_LENGTH:
        raise ValueError(f"the content state is longer than {MAX_LENGTH} characters")
    text = param.strip()
    if not text:
        raise ValueError("the content state is empty")
    if text[0] not in "{[" and ":" in text[:12]:  # a URI (base64url has no ':')
        return _plain_uri(text, kind)
    if text[0] not in "{[":
        text = decode_text(text).strip()
        if not text.startswith(("{", "[")):
            raise ValueError(
                "not a content state: it decodes to text, not JSON (a URI is given as it is, "
                "never content-state-encoded)"
            )
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("not a content state: its JSON does not parse") from None
    if kind == "image":
        raise ValueError("an image service is given as its URI, not as JSON")
    return _from_json(data)


def _plain_uri(uri: str, kind: Kind | None) -> Target:
    _check_uri(uri, "the content state")
    path = urlsplit(uri).path
    if kind == "image" or (kind is None and path.endswith("/info.json")):
        service = uri.split("#", 1)[0]
        if service.endswith("/info.json"):
            service = service[: -len("/info.json")]
        return Target(image_service=service.rstrip("/"))
    return Target(manifest=uri)


def _check_uri(uri: Any, what: str) -> str:
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"{what} has no URI")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in uri):
        raise ValueError(f"{what}: its URI contains spaces or control characters")
    try:
        split = urlsplit(uri)
    except ValueError:
        raise ValueError(f"{what}: its URI does not parse") from None
    if split.scheme.lower() not in ("http", "https") or not split.hostname:
        raise ValueError(f"{what}: only http:// and https:// URIs are opened, not {uri[:40]!r}")
    return uri


def _from_json(data: Any) -> Target:
    if isinstance(data, list):
        data = _first(data, "the content state")
    if not isinstance(data, dict):
        raise ValueError("not a content state: it is neither an Annotation nor a resource")
    kind = _type(data)
    if kind == "Annotation":
        motivation = data.get("motivation")
        motivations = motivation if isinstance(motivation, list) else [motivation]
        if "contentState" not in motivations:
            raise ValueError(
                "an Annotation given as content state must have motivation contentState"
            )
        target = data.get("target")
        if isinstance(target, list):
            target = _first(target, "the Annotation's target")
        if isinstance(target, str):
            return _plain_uri(target, None)
        if not isinstance(target, dict):
            raise ValueError("the content state Annotation has no target")
        return _from_target(target)
    return _from_target(data)


def _first(items: list[Any], what: str) -> Any:
    """Several targets ask for a comparison view; viewers here open the first, as UV does."""
    if not items:
        raise ValueError(f"{what} is an empty list")
    return items[0]


def _type(data: dict[str, Any]) -> str:
    kind = data.get("type", data.get("@type"))
    if not isinstance(kind, str):
        raise ValueError("a resource in the content state has no type")
    return kind.removeprefix("sc:")


def _id(data: dict[str, Any], what: str) -> str:
    return _check_uri(data.get("id", data.get("@id")), what)


def _from_target(target: dict[str, Any]) -> Target:
    kind = _type(target)
    if kind in _CONTAINERS:
        return Target(manifest=_id(target, f"the {kind}"))
    if kind == "Canvas":
        return _canvas(target, None)
    if kind == "SpecificResource":
        source = target.get("source")
        if not isinstance(source, dict) or _type(source) != "Canvas":
            raise ValueError("a SpecificResource in the content state must have a Canvas as source")
        return _canvas(source, _selector_region(target.get("selector")))
    if kind == "Range":
        return Target(manifest=_part_of(target, "the Range"))
    raise ValueError(
        f"a content state targeting a {kind!r} is not supported "
        "(Manifest, Collection, Canvas, Range or a SpecificResource of a Canvas)"
    )


def _canvas(canvas: dict[str, Any], region: tuple[int, int, int, int] | None) -> Target:
    ident = _id(canvas, "the Canvas")
    base, _, fragment = ident.partition("#")
    if fragment:
        found = region_of(fragment)
        if found is not None and region is None:
            region = found
    return Target(manifest=_part_of(canvas, "the Canvas"), canvas=base, region=region)


def _part_of(resource: dict[str, Any], what: str) -> str:
    part_of = resource.get("partOf", resource.get("within"))
    candidates = part_of if isinstance(part_of, list) else [part_of]
    for item in candidates:
        if isinstance(item, str):
            return _check_uri(item, f"{what}'s partOf")
        if isinstance(item, dict) and item.get("type", item.get("@type", "Manifest")) in (
            "Manifest",
            "sc:Manifest",
        ):
            return _id(item, f"{what}'s partOf")
    raise ValueError(f"{what} in the content state needs partOf naming its Manifest")


def _selector_region(selector: Any) -> tuple[int, int, int, int] | None:
    if isinstance(selector, list):
        selector = selector[0] if selector else None
    if selector is None:
        return None
    if not isinstance(selector, dict):
        raise ValueError("the content state's selector is not an object")
    kind = selector.get("type")
    if kind == "FragmentSelector":
        value = selector.get("value")
        region = region_of(value) if isinstance(value, str) else None
        if region is None:
            raise ValueError("the FragmentSelector's value must be xywh=x,y,w,h in pixels")
        return region
    if kind == "PointSelector":  # a time point: the canvas opens at its start
        return None
    raise ValueError(f"a {kind!r} selector is not supported (only FragmentSelector xywh=)")


def region_of(fragment: str) -> tuple[int, int, int, int] | None:
    """The ``xywh=x,y,w,h`` region of a URI fragment (``a=1&xywh=...`` too), or None."""
    for part in fragment.split("&"):
        if not part.startswith("xywh="):
            continue
        match = _XYWH_RE.fullmatch(part)
        if match is None:
            raise ValueError(
                "the region must be xywh=x,y,w,h in whole pixels (percent: is not read)"
            )
        x, y, w, h = (int(g) for g in match.groups())
        if w == 0 or h == 0:
            raise ValueError("the region xywh= has zero width or height")
        return (x, y, w, h)
    return None
