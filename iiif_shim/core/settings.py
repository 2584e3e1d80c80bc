"""The ``iiif:`` section (the Image API's URL prefix, its size limits, the tiles it offers when a
backend has none, the encoder quality, two spec readings, whether originals are sent as they
are, and the largest source it decodes), and the image service's slice of the whole
configuration (:class:`ServiceSettings`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from iiif_shim.backends.settings import BackendSettings
from iiif_shim.base.schema import at_least, between, option
from iiif_shim.cache.settings import CacheSettings
from iiif_shim.core.routing import RouteSettings
from iiif_shim.imaging.settings import PILLOW_GUARD_PIXELS, ImagingSettings

_PREFIX_RE = re.compile(r"(/[A-Za-z0-9._~!$'()*+,;=:@-]+)*")


def _prefix(value: str) -> str | None:
    if value.endswith("/") or not _PREFIX_RE.fullmatch(value):
        return "must be empty or start with '/', have no trailing '/' and only URL-safe characters"
    return None


@dataclass(frozen=True)
class IIIFSettings:
    prefix: str = option(
        "/iiif", doc="URL path before `/3/` and `/2/` (empty: at the root)", check=_prefix
    )
    max_width: int | None = option(
        12000, doc="widest output (info.json `maxWidth`; `null`: none)", check=at_least(1)
    )
    max_height: int | None = option(
        12000, doc="tallest output (`maxHeight`; needs `max_width`)", check=at_least(1)
    )
    max_area: int | None = option(
        100_000_000, doc="most output pixels (`maxArea`)", check=at_least(1)
    )
    tile_size: int = option(
        512,
        doc="tile width and height advertised when the backend has no native tiles",
        check=at_least(16),
    )
    jpeg_quality: int = option(85, doc="JPEG/WebP/PDF encoder quality", check=between(1, 100))
    upscale_max_to_limits: bool = option(
        False,
        doc="3.0 `^max` enlarges to the limits (the spec's example) instead of equalling "
        "`max` (what the official validator expects); see [Spec "
        "gaps](image-api.md#spec-gaps)",
    )
    clamp_confined_size: bool = option(
        False,
        doc="3.0 `!w,h` with a box larger than the region returns the region (the spec's "
        "text) instead of 400 (what the official validator expects)",
    )
    originals: bool = option(
        True,
        doc="the whole master at its own size in its own format (`full/max/0/default.jpg` of "
        "a JPEG master) is answered with the master's own file, byte for byte, when its pixels "
        "are what a re-encoding would give: with all it carries (EXIF with any GPS position, "
        "camera serial numbers and thumbnail, XMP, IPTC, colour profile, PNG gamma, any bytes "
        "after the image data); `false`: re-encoded as every other answer, without them; see "
        "[Originals as they are](image-api.md#originals-as-they-are)",
    )
    max_source_pixels: int = option(
        500_000_000,
        doc="largest source (width x height) decoded; larger ones get 501 (at most "
        "1073741824, where Pillow's own bomb guard refuses)",
        check=between(1, PILLOW_GUARD_PIXELS),
    )


@dataclass(frozen=True)
class ServiceSettings:
    """What the image service is made of: its slice of the whole configuration (``config``
    assembles it), so nothing below the configuration needs to know the rest."""

    iiif: IIIFSettings
    routes: tuple[RouteSettings, ...]
    backends: Mapping[str, BackendSettings]
    cache: CacheSettings
    imaging: ImagingSettings
    threads: int  # for image work (0: one per CPU)
    max_pending: int  # jobs of one lane (images, documents, PDFs) queued or running before 503
    request_timeout: float  # seconds a job may take
    memory_budget: int  # bytes of decoded pixels, for the process
    memory_wait: float  # seconds a request waits for them
    # rendered images kept in the image cache tiers (memory, disk, Redis); False: neither read
    # nor stored there (``iiif-shim export``: its files would push a live server's working set
    # out of caches it shares); facts are cached either way
    keep_rendered: bool = True
