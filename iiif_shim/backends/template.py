"""``template``: a backend defined entirely in YAML, for servers that have no module of their own.

One URL template reads the metadata (width and height found by a JSON path, an XML attribute
or a regular expression); another asks for pixels, with placeholders for what the server does
natively, as the YAML declares it:

- region ``pixels`` or ``fractions``: ``{x} {y} {w} {h}`` in any order (full-image pixels, or
  fractions 0-1 of the width/height); ``scaled``: ``{scaled_x} {scaled_y}`` (the region's offset
  at the output scale) with ``{width} {height}`` as the viewport and ``{scale_pct}`` (CONTENTdm);
- size ``exact`` or ``keep_aspect``: ``{width} {height}`` and ``{scale_pct}``;
- ``{rotation}`` (the 90s listed under ``rotation``), ``{format}`` and ``{quality}`` (each the
  server's own word for the IIIF value, from ``formats`` and ``qualities``);
- ``{id}`` and the route's named groups, as everywhere.

Every value is percent-encoded for its place in the URL (see ``upstream/urltemplate.py``). What
the YAML does not declare, Pillow does. Ready presets: ``config/djatoka.yaml``,
``config/contentdm.yaml``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from iiif_shim.backends.base import BackendContext, UpstreamBackend
from iiif_shim.backends.settings import TemplateSettings
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import NativeFacts, SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.upstream.client import Answer, Body


def _decimal(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text or "0"


class TemplateBackend(UpstreamBackend[TemplateSettings]):
    settings_class = TemplateSettings

    async def start(self, context: BackendContext) -> None:
        await super().start(context)
        formats = self.capabilities().formats
        # what to ask for when Pillow works on the answer: JPEG if the server has it
        self._carrier = Format.JPG if Format.JPG in formats else min(formats)

    def capabilities(self, native: NativeFacts | None = None) -> Capabilities:
        image = self.settings.image
        return Capabilities(
            region=image.region != "none",
            size=image.size == "exact",
            size_keeps_aspect=image.size == "keep_aspect",
            upscale=image.upscale,
            max_size=image.max_size,
            rotation90=set(image.rotation) >= {90, 180, 270},
            qualities=frozenset(Quality(q) for q in image.qualities) - {Quality.DEFAULT},
            formats=frozenset(Format(f) for f in image.formats),
        )

    async def facts(self, target: Target) -> SourceInfo:
        info = self.settings.info

        def read(answer: Answer) -> tuple[int, int]:
            text = answer.text()
            return info.width.find(text), info.height.find(text)

        url = self.url("info.url", target.template_values())
        (width, height), answer = await self.metadata(
            url, read, what="a metadata answer with a width and height", target=target
        )
        return SourceInfo(
            width=width,
            height=height,
            version=answer.version,
            last_modified=answer.last_modified,
        )

    def image_url(self, target: Target, op: NativeOp, info: SourceInfo) -> str:
        image = self.settings.image
        r = op.region
        width, height = op.size or (r.w, r.h)
        fmt = op.format or self._carrier
        values = dict(target.template_values())
        if image.region == "fractions":
            values |= {
                "x": _decimal(r.x / info.width, 10),
                "y": _decimal(r.y / info.height, 10),
                "w": _decimal(r.w / info.width, 10),
                "h": _decimal(r.h / info.height, 10),
            }
        else:
            values |= {"x": str(r.x), "y": str(r.y), "w": str(r.w), "h": str(r.h)}
        values |= {
            "width": str(width),
            "height": str(height),
            "scale_pct": _decimal(100 * width / r.w, 6),
            "scaled_x": str(round(r.x * width / r.w)),
            "scaled_y": str(round(r.y * height / r.h)),
            "rotation": str(op.rotation),
            "format": image.formats.get(fmt.value, fmt.value),
            "quality": image.qualities.get((op.quality or Quality.DEFAULT).value, ""),
        }
        return self.url("image.url", values)

    def stream(
        self, target: Target, op: NativeOp, info: SourceInfo
    ) -> AbstractAsyncContextManager[Body] | None:
        return self.upstream.stream(self.image_url(target, op, info), image_id=target.native_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        url = self.image_url(target, op, info)
        return await self.image(url, target)
