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

Every value is percent-encoded for its place in the URL (see ``urltemplate.py``). What the YAML
does not declare, Pillow does. Ready presets: ``config/djatoka.yaml``, ``config/contentdm.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from iiif_shim.backends.base import UpstreamBackend
from iiif_shim.base.schema import at_least, option
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.model.facts import NativeFacts, SourceInfo
from iiif_shim.model.plan import Capabilities, NativeOp, Target
from iiif_shim.upstream.client import Answer, Body
from iiif_shim.upstream.jsonpath import path_check, select
from iiif_shim.upstream.parse import parse_json, parse_xml
from iiif_shim.upstream.settings import UpstreamSettings
from iiif_shim.upstream.urltemplate import UrlTemplate, url_template

REGION_MODES = ("none", "pixels", "fractions", "scaled")
SIZE_MODES = ("none", "exact", "keep_aspect")
_COMPUTED = {
    "x",
    "y",
    "w",
    "h",
    "width",
    "height",
    "scale_pct",
    "scaled_x",
    "scaled_y",
    "rotation",
    "format",
    "quality",
}
_NEEDS = {
    "pixels": {"x", "y", "w", "h"},
    "fractions": {"x", "y", "w", "h"},
    "scaled": {"scaled_x", "scaled_y", "width", "height"},
}


def _one_of(choices: tuple[str, ...]) -> Any:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


@dataclass(frozen=True)
class Extract:
    """Where a number is in the metadata answer: give exactly one of the three."""

    json: str | None = option(
        None,
        doc="path in a JSON answer, e.g. `image.width`, `sizes.0.width` or `$.sizes[0].width` "
        "(its first match)",
        check=path_check,
    )
    xml: str | None = option(None, doc="element path and attribute in XML, e.g. `Size/@Width`")
    regex: str | None = option(None, doc="regular expression on the text; its first group")

    def problems(self) -> list[tuple[str, str]]:
        given = [k for k in ("json", "xml", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            return [("", "give exactly one of json, xml or regex")]
        if self.xml is not None and "@" not in self.xml:
            return [("xml", "must end in an attribute, e.g. `Size/@Width`")]
        if self.regex is not None:
            try:
                if re.compile(self.regex).groups < 1:
                    return [("regex", "needs a group around the number, e.g. `Width=(\\d+)`")]
            except re.error as exc:
                return [("regex", f"not a valid regular expression: {exc}")]
        return []

    def find(self, text: str) -> int:
        """The number in ``text``; ValueError when it is not there."""
        if self.json is not None:
            matches = select(parse_json(text), self.json)
            if not matches:
                raise ValueError(f"nothing at {self.json}")
            return _number(matches[0])
        if self.xml is not None:
            element_path, _, attribute = self.xml.rpartition("@")
            root = parse_xml(text)  # tag names without their XML namespaces
            element_path = element_path.rstrip("/")
            found = root if element_path in ("", ".", root.tag) else root.find(element_path)
            if found is None:
                found = root.find(".//" + element_path.rsplit("/", 1)[-1])
            if found is None or attribute not in found.attrib:
                raise ValueError(f"no {self.xml}")
            return _number(found.attrib[attribute])
        assert self.regex is not None
        m = re.search(self.regex, text)
        if m is None:
            raise ValueError(f"no match for {self.regex}")
        return _number(m.group(1))


def _number(value: Any) -> int:
    number = int(float(value))
    if number < 1:
        raise ValueError(f"{value!r} is not a positive size")
    return number


@dataclass(frozen=True)
class TemplateInfo:
    url: str = option(doc="URL template of the metadata answer", check=url_template)
    width: Extract = option(doc="where the width is")
    height: Extract = option(doc="where the height is")


@dataclass(frozen=True)
class TemplateImage:
    url: str = option(doc="URL template of an image", check=url_template)
    region: str = option(
        "none", doc="`none`, `pixels`, `fractions` or `scaled`", check=_one_of(REGION_MODES)
    )
    size: str = option("none", doc="`none`, `exact` or `keep_aspect`", check=_one_of(SIZE_MODES))
    upscale: bool = option(False, doc="the server enlarges beyond the region")
    max_size: int | None = option(None, doc="longest side it will scale to", check=at_least(1))
    rotation: tuple[int, ...] = option((), doc="clockwise 90s it rotates by, e.g. `[90, 180, 270]`")
    formats: Mapping[str, str] = option(
        MappingProxyType({"jpg": "jpeg"}), doc="IIIF format -> the server's `{format}` value"
    )
    qualities: Mapping[str, str] = option(
        MappingProxyType({}), doc="IIIF quality -> the server's `{quality}` value"
    )

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        names = UrlTemplate.parse(self.url).placeholders
        if self.region in _NEEDS and not _NEEDS[self.region] <= names:
            missing = ", ".join("{" + n + "}" for n in sorted(_NEEDS[self.region] - names))
            found.append(("url", f"region: {self.region} needs {missing}"))
        if self.region == "scaled" and self.size != "keep_aspect":
            found.append(("size", "region: scaled needs size: keep_aspect"))
        if self.size != "none" and not ({"width", "height", "scale_pct"} & names):
            found.append(("url", f"size: {self.size} needs {{width}}, {{height}} or {{scale_pct}}"))
        if self.rotation and "rotation" not in names:
            found.append(("url", "rotation is listed but the URL has no {rotation}"))
        if bad := [r for r in self.rotation if r not in (90, 180, 270)]:
            found.append(("rotation", f"only 90, 180 and 270 can be native, not {bad}"))
        if bad_f := [f for f in self.formats if f not in {x.value for x in Format}]:
            found.append(("formats", f"not IIIF formats: {bad_f}"))
        if not self.formats:
            found.append(("formats", "name at least the format the server sends"))
        if bad_q := [q for q in self.qualities if q not in {x.value for x in Quality}]:
            found.append(("qualities", f"not IIIF qualities: {bad_q}"))
        if self.qualities and "quality" not in names:
            found.append(("url", "qualities are listed but the URL has no {quality}"))
        if "quality" in names and "default" not in self.qualities:
            found.append(("qualities", "the URL has {quality}: name the server's `default`"))
        if "format" in names and not self.formats:
            found.append(("formats", "the URL has {format}: map at least `jpg`"))
        return found


@dataclass(frozen=True, kw_only=True)
class TemplateSettings(UpstreamSettings):
    type: str = option(doc="`template`")
    info: TemplateInfo = option(doc="metadata request: `url`, `width`, `height`")
    image: TemplateImage = option(doc="image request and what the server does natively")


def _decimal(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text or "0"


class TemplateBackend(UpstreamBackend):
    type_name = "template"
    settings_class = TemplateSettings
    settings: TemplateSettings

    @classmethod
    def templates(cls, settings: TemplateSettings) -> dict[str, UrlTemplate]:
        return {
            "info.url": UrlTemplate.parse(settings.info.url),
            "image.url": UrlTemplate.parse(settings.image.url),
        }

    async def start(self) -> None:
        await super().start()
        formats = self.capabilities(self.settings).formats
        # what to ask for when Pillow works on the answer: JPEG if the server has it
        self._carrier = Format.JPG if Format.JPG in formats else min(formats)

    @classmethod
    def reserved(cls, settings: TemplateSettings) -> frozenset[str]:
        return frozenset(_COMPUTED)

    @classmethod
    def capabilities(
        cls, settings: TemplateSettings, native: NativeFacts | None = None
    ) -> Capabilities:
        image = settings.image
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
        return self.upstream.stream(self.image_url(target, op, info), source=target.native_id)

    async def fetch(self, target: Target, op: NativeOp, info: SourceInfo) -> Fetched:
        url = self.image_url(target, op, info)
        answer = await self.upstream.get(url, image=True, source=target.native_id)
        return Fetched(data=answer.body, described=f"backend '{self.name}'")
