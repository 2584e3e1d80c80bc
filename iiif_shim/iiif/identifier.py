"""An identifier as one segment of a IIIF URL (spec: "the identifier ... MUST be URI encoded",
so a ``/`` inside it is ``%2F``). Pure."""

from __future__ import annotations

from urllib.parse import quote

# Characters left as they are in an identifier path segment: unreserved and sub-delims and ":".
# Everything else, including "/", "?", "#", "[", "]", "@", "%" and non-ASCII, is encoded.
_ID_SAFE = "-._~!$&'()*+,;=:"


def encode_identifier(identifier: str) -> str:
    """The identifier as one URL path segment (``ark:/1/2`` -> ``ark:%2F1%2F2``)."""
    return quote(identifier, safe=_ID_SAFE)
