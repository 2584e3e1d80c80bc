"""``thumbor``: a Thumbor URL-transform server (crop, resize, flip, rotate, filters).

Metadata from ``/meta/<image>``. Natively: region (manual crop, right/bottom exclusive, left out
for the full image so Thumbor can decode JPEGs at reduced scale), exact size (always ``WxH`` with
``filters:stretch()``: without it two dimensions mean crop-to-fill), upscaling, mirroring
(negative width, applied before the filters, as IIIF mirrors before rotating), rotation by 90s
(``rotate()`` turns counter-clockwise, so IIIF 90 is ``rotate(270)``), ``gray``
(``grayscale()``), and jpg, png, webp and gif (``format()``). Pillow does arbitrary angles (Thumbor
ignores them), bitonal, tif, jp2 and pdf (Thumbor silently returns the source format for those).

URLs are ``unsafe`` unless ``security_key`` is set; then each is signed: URL-safe base64 (with
padding) of HMAC-SHA1 over the path after the signature, exactly as sent. Thumbor itself must run
with ``MAX_WIDTH = MAX_HEIGHT = 0``, or it shrinks sources on load and misreports their size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from contextlib import AbstractAsyncContextManager

from yarl import URL

from iiif_shim.backends.base import UpstreamBackend
from iiif_shim.backends.settings import ThumborSettings
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import NativeFacts, SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.upstream.client import Answer, Body
from iiif_shim.upstream.parse import parse_json

_FORMATS = {Format.JPG: "jpeg", Format.PNG: "png", Format.WEBP: "webp", Format.GIF: "gif"}


def sign(key: str, path: str) -> str:
    digest = hmac.new(key.encode(), path.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


_NATIVE = Capabilities(
    region=True,
    size=True,
    upscale=True,
    rotation90=True,
    mirror=True,
    qualities=frozenset({Quality.GRAY}),
    formats=frozenset(_FORMATS),
)


def _read_meta(answer: Answer) -> tuple[int, int]:
    source = parse_json(answer.body)["thumbor"]["source"]
    return int(source["width"]), int(source["height"])


class ThumborBackend(UpstreamBackend[ThumborSettings]):
    settings_class = ThumborSettings

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        return _NATIVE

    def thumbor_url(self, operations: str, target: Target) -> URL:
        image = self.url("path", target.template_values())
        path = f"{operations}/{image}" if operations else image
        key = self.settings.security_key
        signature = sign(key, path) if key else "unsafe"
        return URL(f"{self.settings.url.rstrip('/')}/{signature}/{path}", encoded=True)

    async def facts(self, target: Target) -> SourceInfo:
        url = str(self.thumbor_url("meta", target))
        (width, height), _ = await self.metadata(url, _read_meta, what="metadata", target=target)
        # No version: the ETag of Thumbor's meta answer hashes that JSON (the size), not the
        # image, so it would not change with the pixels. Derivatives are neither cached nor
        # tagged; Thumbor's own result storage is the place to cache them.
        return SourceInfo(width=width, height=height)

    def operations(self, op: NativeOp, info: SourceInfo) -> str:
        r = op.region
        parts = []
        if (r.x, r.y, r.w, r.h) != (0, 0, info.width, info.height):
            parts.append(f"{r.x}x{r.y}:{r.x + r.w}x{r.y + r.h}")
        w, h = op.size or (r.w, r.h)
        parts.append(f"{'-' if op.mirror else ''}{w}x{h}")
        filters = ["stretch()"]
        if op.rotation:
            filters.append(f"rotate({(360 - op.rotation) % 360})")
        if op.quality is Quality.GRAY:
            filters.append("grayscale()")
        # with Pillow work left, ask for a lossless carrier
        filters.append(f"format({_FORMATS[op.format] if op.format else 'png'})")
        parts.append("filters:" + ":".join(filters))
        return "/".join(parts)

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        return self.upstream.stream(
            self.thumbor_url(self.operations(op, info), target), image_id=target.native_id
        )

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        url = self.thumbor_url(self.operations(op, info), target)
        return await self.image(url, target)
