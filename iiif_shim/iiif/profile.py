"""IIIF Image API vocabulary: versions, qualities, formats, feature names and compliance levels.

Pure constants and small lookups, shared by the parser, the resolver and the info.json builder,
so each spec term is spelled in exactly one place.
"""

from __future__ import annotations

import re
from enum import StrEnum

# the rights URIs both APIs accept (the Presentation validator's rule: http:// forms only),
# their path (and any query) made only of characters a URI may hold: never a quote, a space, an
# angle bracket or a backslash, and a per cent sign only as an escape
_URI_CHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})"
RIGHTS_RE = re.compile(
    r"http://(?:creativecommons\.org/(?:licenses|publicdomain)/|rightsstatements\.org/vocab/)"
    rf"{_URI_CHAR}+(?:\?(?:{_URI_CHAR}|\?)*)?"
)


class Version(StrEnum):
    """Image API major version, as it appears in the URL (``{prefix}/3/...``)."""

    V2 = "2"
    V3 = "3"

    @property
    def context(self) -> str:
        return f"http://iiif.io/api/image/{self.value}/context.json"

    @property
    def level2_uri(self) -> str:
        return f"http://iiif.io/api/image/{self.value}/level2.json"


PROTOCOL = "http://iiif.io/api/image"


class Quality(StrEnum):
    DEFAULT = "default"
    COLOR = "color"
    GRAY = "gray"
    BITONAL = "bitonal"


class Format(StrEnum):
    """Output formats named by the spec, in the spec's order."""

    JPG = "jpg"
    TIF = "tif"
    PNG = "png"
    GIF = "gif"
    JP2 = "jp2"
    PDF = "pdf"
    WEBP = "webp"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self]

    @property
    def has_alpha(self) -> bool:
        """Whether the format can carry transparency (used for arbitrary rotation)."""
        return self in (Format.PNG, Format.WEBP, Format.TIF, Format.GIF, Format.JP2)


_MEDIA_TYPES = {
    Format.JPG: "image/jpeg",
    Format.TIF: "image/tiff",
    Format.PNG: "image/png",
    Format.GIF: "image/gif",
    Format.JP2: "image/jp2",
    Format.PDF: "application/pdf",
    Format.WEBP: "image/webp",
}

# Formats every level-2 service must offer (both versions).
LEVEL2_FORMATS = frozenset({Format.JPG, Format.PNG})

# Qualities in each version's level2 profile document.
LEVEL2_QUALITIES = {
    Version.V3: frozenset({Quality.DEFAULT}),
    Version.V2: frozenset({Quality.DEFAULT, Quality.BITONAL}),
}

# Feature names in each version's level2 profile document.
LEVEL2_FEATURES = {
    Version.V3: frozenset(
        {
            "baseUriRedirect",
            "cors",
            "jsonldMediaType",
            "regionByPct",
            "regionByPx",
            "regionSquare",
            "rotationBy90s",
            "sizeByConfinedWh",
            "sizeByH",
            "sizeByPct",
            "sizeByW",
            "sizeByWh",
        }
    ),
    Version.V2: frozenset(
        {
            "baseUriRedirect",
            "cors",
            "jsonldMediaType",
            "regionByPct",
            "regionByPx",
            "rotationBy90s",
            "sizeByWhListed",
            "sizeByConfinedWh",
            "sizeByDistortedWh",
            "sizeByForcedWh",
            "sizeByH",
            "sizeByPct",
            "sizeByW",
            "sizeByWh",
        }
    ),
}

# Every level's features, formats and qualities (to read an upstream service's profile).
LEVEL_FEATURES: dict[Version, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    Version.V3: (
        frozenset(),
        frozenset(
            {
                "baseUriRedirect",
                "cors",
                "jsonldMediaType",
                "regionByPx",
                "regionSquare",
                "sizeByH",
                "sizeByW",
                "sizeByWh",
            }
        ),
        LEVEL2_FEATURES[Version.V3],
    ),
    Version.V2: (
        frozenset({"sizeByWhListed"}),
        frozenset(
            {
                "baseUriRedirect",
                "cors",
                "jsonldMediaType",
                "regionByPx",
                "sizeByH",
                "sizeByPct",
                "sizeByW",
                "sizeByWhListed",
            }
        ),
        LEVEL2_FEATURES[Version.V2],
    ),
}
LEVEL_FORMATS = (frozenset({Format.JPG}), frozenset({Format.JPG}), LEVEL2_FORMATS)
LEVEL_QUALITIES: dict[Version, tuple[frozenset[Quality], ...]] = {
    v: (frozenset({Quality.DEFAULT}), frozenset({Quality.DEFAULT}), LEVEL2_QUALITIES[v])
    for v in Version
}

# Optional features the shim's own pipeline (Pillow) provides for every image, by version.
# Upscaling is added separately: it is only honest when size limits are configured.
PIPELINE_FEATURES = {
    Version.V3: frozenset(
        {"canonicalLinkHeader", "profileLinkHeader", "mirroring", "rotationArbitrary"}
    ),
    Version.V2: frozenset(
        {
            "canonicalLinkHeader",
            "profileLinkHeader",
            "mirroring",
            "rotationArbitrary",
            "regionSquare",
        }
    ),
}

UPSCALING_FEATURE = {Version.V3: "sizeUpscaling", Version.V2: "sizeAboveFull"}


def json_media_type(version: Version) -> str:
    """The JSON-LD media type of an info.json (3.0 carries the context as a profile)."""
    if version is Version.V3:
        return f'application/ld+json;profile="{version.context}"'
    return "application/ld+json"


class Colour(StrEnum):
    """What colour information a source has; decides the default quality."""

    COLOR = "color"
    GRAY = "gray"
    BITONAL = "bitonal"
