"""Manifests and collections, Presentation 3.0 and 2.1, as plain data.

Pure: an :class:`~.records.ObjectRecord`, the pixel size of each canvas's image (from the same
cached source facts as info.json), the public URLs and the settings go in; a JSON-ready dict
comes out. Every URL is built by :class:`Urls`, in one place, so each ``id`` is the address the
shim really serves. Metadata labels and values carry every language they were given in (3.0
language maps, 2.1 ``@value``/``@language`` lists). Texts are plain text: a value that a viewer
would take for HTML (first character ``<``, last ``>``) is escaped and wrapped so it shows as
written. A canvas whose image service sends its master as it is (the whole of it at its own
size in its own format: ``core/passthrough.py``) offers that URL as a ``rendering``, the
"download original".
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from iiif_shim.iiif.identifier import encode_identifier
from iiif_shim.iiif.profile import Format, Version
from iiif_shim.presentation.labels import Texts
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.settings import PresentationSettings

CONTEXT_3 = "http://iiif.io/api/presentation/3/context.json"
CONTEXT_2 = "http://iiif.io/api/presentation/2/context.json"
IMAGE_CONTEXT_2 = "http://iiif.io/api/image/2/context.json"
LEVEL2_V2 = "http://iiif.io/api/image/2/level2.json"
_VIEWING_HINTS_2 = ("paged", "continuous", "individuals")
_FORMAT_NAMES = {Format.JPG: "JPEG", Format.PNG: "PNG", Format.TIF: "TIFF", Format.WEBP: "WebP"}


@dataclass(frozen=True)
class Urls:
    """The public URLs of everything a manifest names."""

    site: str  # scheme://host[/path], where /objects/ and /view/ live
    iiif: str  # site + IIIF prefix

    def manifest(self, version: str, name: str) -> str:
        return f"{self.iiif}/presentation/{version}/{encode_identifier(name)}/manifest"

    def collection(self, version: str, source: str | None = None) -> str:
        top = f"{self.iiif}/presentation/{version}/collection"
        return top if source is None else f"{top}/{encode_identifier(source)}"

    def service(self, version: Version, identifier: str) -> str:
        return f"{self.iiif}/{version.value}/{encode_identifier(identifier)}"

    def object_page(self, name: str) -> str:
        return f"{self.site}/objects/{encode_identifier(name)}"

    def pdf(self, name: str) -> str:
        return f"{self.iiif}/presentation/{encode_identifier(name)}/pdf"


@dataclass(frozen=True)
class Picture:
    """A canvas's image as the Image API serves it: full size, what ``max`` returns, and the
    thumbnail size (each exactly what the shim answers for that request); ``original``: the
    format in which the whole image at its own size is the master's own bytes, if it is."""

    identifier: str
    width: int
    height: int
    max_size: tuple[int, int]
    thumb_size: tuple[int, int]
    original: Format | None = None

    @property
    def original_text(self) -> str:
        """What the original is, for people: ``JPEG, 6000 x 4000``."""
        fmt = self.original
        name = "" if fmt is None else _FORMAT_NAMES.get(fmt, fmt.value.upper())
        return f"{name}, {self.width} x {self.height}"


def thumb_size(width: int, height: int, box: int) -> tuple[int, int]:
    """The size that fits ``width`` x ``height`` in a ``box`` square, never enlarged."""
    scale = min(1.0, box / width, box / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _looks_like_html(value: str) -> bool:
    return value.startswith("<") and value.endswith(">")


def _text(value: str) -> str:
    """A value (summary, metadata value) that no viewer takes for HTML: one that would be is
    escaped and wrapped, so it shows as written."""
    if _looks_like_html(value):
        return f"<span>{html.escape(value, quote=False)}</span>"
    return value


def _label(value: str) -> str:
    """A label, where HTML is not allowed at all: one that would look like HTML gets a leading
    space, so no viewer renders it as markup."""
    return f" {value}" if _looks_like_html(value) else value


def _texts_2(
    value: str | list[dict[str, str]], shown: Callable[[str], str]
) -> str | list[dict[str, str]]:
    """A 2.1 text or @value/@language list with each text made safe by ``shown``."""
    if isinstance(value, str):
        return shown(value)
    return [{**entry, "@value": shown(entry["@value"])} for entry in value]


class Builder:
    """Builds the documents of one request (one public base) from the settings."""

    def __init__(self, settings: PresentationSettings, urls: Urls, title: str) -> None:
        self.settings = settings
        self.urls = urls
        self.title = title  # the label of the top collection

    def lang(self, *values: str) -> dict[str, list[str]]:
        return {self.settings.language: list(values)}

    def _pair(self, label: Texts, value: Texts) -> dict[str, Any]:
        """A 3.0 metadata entry: label and value in each language given."""
        language = self.settings.language
        return {
            "label": {k: [_label(t) for t in v] for k, v in label.v3(language).items()},
            "value": {k: [_text(t) for t in v] for k, v in value.v3(language).items()},
        }

    def _pair_2(self, label: Texts, value: Texts) -> dict[str, Any]:
        """A 2.1 metadata entry: plain strings, or @value/@language lists for several
        languages."""
        language = self.settings.language
        return {
            "label": _texts_2(label.v2(language), _label),
            "value": _texts_2(value.v2(language), _text),
        }

    # --- Presentation 3.0 --------------------------------------------------------------

    def _services(self, identifier: str) -> list[dict[str, Any]]:
        return [
            {
                "id": self.urls.service(Version.V3, identifier),
                "type": "ImageService3",
                "profile": "level2",
            },
            {
                "@id": self.urls.service(Version.V2, identifier),
                "@type": "ImageService2",
                "profile": LEVEL2_V2,
            },
        ]

    def original(self, version: Version, picture: Picture) -> dict[str, Any] | None:
        """The picture's master as it is (``full/max``, in 2.1 ``full/full``, in the master's
        own format) as a ``rendering`` of its canvas, when its image service sends it so;
        else ``None``."""
        fmt = picture.original
        if fmt is None:
            return None
        size = "max" if version is Version.V3 else "full"
        url = f"{self.urls.service(version, picture.identifier)}/full/{size}/0/default.{fmt}"
        label = f"Original image ({picture.original_text})"
        if version is Version.V3:
            return {
                "id": url,
                "type": "Image",
                "label": self.lang(label),
                "format": fmt.media_type,
                "width": picture.width,
                "height": picture.height,
            }
        return {"@id": url, "label": label, "format": fmt.media_type}

    def thumbnail(self, picture: Picture) -> dict[str, Any]:
        w, h = picture.thumb_size
        return {
            "id": f"{self.urls.service(Version.V3, picture.identifier)}/full/{w},{h}/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "width": w,
            "height": h,
            "service": self._services(picture.identifier),
        }

    def _canvas(self, base: str, index: int, label: str | None, pic: Picture) -> dict[str, Any]:
        canvas_id = f"{base}/canvas/{index + 1}"
        mw, mh = pic.max_size
        body = {
            "id": f"{self.urls.service(Version.V3, pic.identifier)}/full/max/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "width": mw,
            "height": mh,
            "service": self._services(pic.identifier),
        }
        canvas: dict[str, Any] = {
            "id": canvas_id,
            "type": "Canvas",
            "label": self.lang(_label(label or str(index + 1))),
            "width": pic.width,
            "height": pic.height,
            "thumbnail": [self.thumbnail(pic)],
        }
        if original := self.original(Version.V3, pic):
            canvas["rendering"] = [original]
        canvas["items"] = [
            {
                "id": f"{canvas_id}/page",
                "type": "AnnotationPage",
                "items": [
                    {
                        "id": f"{canvas_id}/page/image",
                        "type": "Annotation",
                        "motivation": "painting",
                        "body": body,
                        "target": canvas_id,
                    }
                ],
            }
        ]
        return canvas

    def _provider(self) -> list[dict[str, Any]]:
        provider = self.settings.provider
        if provider is None:
            return []
        agent: dict[str, Any] = {
            "id": provider.homepage or f"{self.urls.site}/",
            "type": "Agent",
            "label": self.lang(provider.label),
        }
        if provider.homepage:
            agent["homepage"] = [
                {
                    "id": provider.homepage,
                    "type": "Text",
                    "label": self.lang(provider.label),
                    "format": "text/html",
                }
            ]
        if provider.logo:
            logo = {"id": provider.logo, "type": "Image"}
            guessed, _ = mimetypes.guess_type(urlsplit(provider.logo).path)
            if guessed and guessed.startswith("image/"):
                logo["format"] = guessed
            agent["logo"] = [logo]
        return [agent]

    def manifest(self, record: ObjectRecord, pictures: Sequence[Picture]) -> dict[str, Any]:
        urls = self.urls
        manifest_id = urls.manifest("3", record.name)
        base = manifest_id.removesuffix("/manifest")
        doc: dict[str, Any] = {
            "@context": CONTEXT_3,
            "id": manifest_id,
            "type": "Manifest",
            "label": self.lang(_label(record.label)),
        }
        if record.summary:
            doc["summary"] = self.lang(_text(record.summary))
        if record.metadata:
            doc["metadata"] = [self._pair(label, value) for label, value in record.metadata]
        if record.required_statement:
            doc["requiredStatement"] = {
                "label": self.lang(self.settings.required_statement_label),
                "value": self.lang(_text(record.required_statement)),
            }
        if record.rights:
            doc["rights"] = record.rights
        if record.nav_date:
            doc["navDate"] = record.nav_date.nav
        if provider := self._provider():
            doc["provider"] = provider
        doc["homepage"] = [
            {
                "id": urls.object_page(record.name),
                "type": "Text",
                "label": self.lang(_label(record.label)),
                "format": "text/html",
            }
        ]
        doc["rendering"] = [
            {
                "id": urls.pdf(record.name),
                "type": "Text",
                "label": self.lang("PDF"),
                "format": "application/pdf",
            }
        ]
        doc["partOf"] = [
            {
                "id": urls.collection("3", record.source),
                "type": "Collection",
                "label": self.lang(record.source),
            }
        ]
        if record.see_also:
            doc["seeAlso"] = [{"id": url, "type": "Dataset"} for url in record.see_also]
        doc["thumbnail"] = [self.thumbnail(pictures[0])]
        if record.behavior:
            doc["behavior"] = list(record.behavior)
        if record.viewing_direction:
            doc["viewingDirection"] = record.viewing_direction
        doc["items"] = [
            self._canvas(base, i, canvas.label, pic)
            for i, (canvas, pic) in enumerate(zip(record.canvases, pictures, strict=True))
        ]
        if record.ranges:
            doc["structures"] = [
                {
                    "id": f"{base}/range/{k + 1}",
                    "type": "Range",
                    "label": self.lang(_label(part.label)),
                    "items": [
                        {"id": f"{base}/canvas/{i + 1}", "type": "Canvas"}
                        for i in range(part.first, part.last + 1)
                    ],
                }
                for k, part in enumerate(record.ranges)
            ]
        return doc

    def top_collection(self, sources: Sequence[str]) -> dict[str, Any]:
        return {
            "@context": CONTEXT_3,
            "id": self.urls.collection("3"),
            "type": "Collection",
            "label": self.lang(self.title),
            "items": [
                {
                    "id": self.urls.collection("3", source),
                    "type": "Collection",
                    "label": self.lang(source),
                }
                for source in sources
            ],
        }

    def collection(
        self, source: str, entries: Sequence[tuple[str, str, Picture | None]]
    ) -> dict[str, Any]:
        """Source ``source``'s collection: (object name, label, thumbnail picture) each."""
        items = []
        for name, label, picture in entries:
            item: dict[str, Any] = {
                "id": self.urls.manifest("3", name),
                "type": "Manifest",
                "label": self.lang(_label(label)),
            }
            if picture is not None:
                item["thumbnail"] = [self.thumbnail(picture)]
            items.append(item)
        return {
            "@context": CONTEXT_3,
            "id": self.urls.collection("3", source),
            "type": "Collection",
            "label": self.lang(source),
            "partOf": [
                {
                    "id": self.urls.collection("3"),
                    "type": "Collection",
                    "label": self.lang(self.title),
                }
            ],
            "items": items,
        }

    # --- Presentation 2.1 --------------------------------------------------------------

    def _service_2(self, identifier: str) -> dict[str, Any]:
        return {
            "@context": IMAGE_CONTEXT_2,
            "@id": self.urls.service(Version.V2, identifier),
            "profile": LEVEL2_V2,
        }

    def _thumbnail_2(self, picture: Picture) -> dict[str, Any]:
        w, h = picture.thumb_size
        service = self.urls.service(Version.V2, picture.identifier)
        return {
            "@id": f"{service}/full/{w},{h}/0/default.jpg",
            "@type": "dctypes:Image",
            "format": "image/jpeg",
            "width": w,
            "height": h,
            "service": self._service_2(picture.identifier),
        }

    def manifest_2(self, record: ObjectRecord, pictures: Sequence[Picture]) -> dict[str, Any]:
        urls = self.urls
        manifest_id = urls.manifest("2", record.name)
        base = manifest_id.removesuffix("/manifest")
        doc: dict[str, Any] = {
            "@context": CONTEXT_2,
            "@id": manifest_id,
            "@type": "sc:Manifest",
            "label": _label(record.label),
        }
        if record.summary:
            doc["description"] = _text(record.summary)
        if record.metadata:
            doc["metadata"] = [self._pair_2(label, value) for label, value in record.metadata]
        if record.required_statement:
            doc["attribution"] = _text(record.required_statement)
        if record.rights:
            doc["license"] = record.rights
        if record.nav_date:
            doc["navDate"] = record.nav_date.nav
        provider = self.settings.provider
        if provider is not None and provider.logo:
            doc["logo"] = provider.logo
        doc["related"] = {"@id": urls.object_page(record.name), "format": "text/html"}
        doc["rendering"] = {
            "@id": urls.pdf(record.name),
            "label": "PDF",
            "format": "application/pdf",
        }
        doc["within"] = urls.collection("2", record.source)
        if record.see_also:
            doc["seeAlso"] = list(record.see_also)
        doc["thumbnail"] = self._thumbnail_2(pictures[0])
        hints = [b for b in record.behavior if b in _VIEWING_HINTS_2]
        if hints:
            doc["viewingHint"] = hints[0]
        if record.viewing_direction:
            doc["viewingDirection"] = record.viewing_direction
        canvases = []
        for i, (canvas, pic) in enumerate(zip(record.canvases, pictures, strict=True)):
            canvas_id = f"{base}/canvas/{i + 1}"
            mw, mh = pic.max_size
            size = "full" if (mw, mh) == (pic.width, pic.height) else f"{mw},{mh}"
            original = self.original(Version.V2, pic)
            canvases.append(
                {
                    "@id": canvas_id,
                    "@type": "sc:Canvas",
                    "label": _label(canvas.label or str(i + 1)),
                    "width": pic.width,
                    "height": pic.height,
                    "thumbnail": self._thumbnail_2(pic),
                    **({"rendering": original} if original else {}),
                    "images": [
                        {
                            "@id": f"{canvas_id}/page/image",
                            "@type": "oa:Annotation",
                            "motivation": "sc:painting",
                            "on": canvas_id,
                            "resource": {
                                "@id": f"{urls.service(Version.V2, pic.identifier)}"
                                f"/full/{size}/0/default.jpg",
                                "@type": "dctypes:Image",
                                "format": "image/jpeg",
                                "width": mw,
                                "height": mh,
                                "service": self._service_2(pic.identifier),
                            },
                        }
                    ],
                }
            )
        doc["sequences"] = [
            {"@id": f"{base}/sequence/normal", "@type": "sc:Sequence", "canvases": canvases}
        ]
        if record.ranges:
            doc["structures"] = [
                {
                    "@id": f"{base}/range/{k + 1}",
                    "@type": "sc:Range",
                    "label": _label(part.label),
                    "canvases": [
                        f"{base}/canvas/{i + 1}" for i in range(part.first, part.last + 1)
                    ],
                }
                for k, part in enumerate(record.ranges)
            ]
        return doc

    def top_collection_2(self, sources: Sequence[str]) -> dict[str, Any]:
        return {
            "@context": CONTEXT_2,
            "@id": self.urls.collection("2"),
            "@type": "sc:Collection",
            "label": self.title,
            "collections": [
                {"@id": self.urls.collection("2", s), "@type": "sc:Collection", "label": s}
                for s in sources
            ],
        }

    def collection_2(
        self, source: str, entries: Sequence[tuple[str, str, Picture | None]]
    ) -> dict[str, Any]:
        manifests = []
        for name, label, picture in entries:
            item: dict[str, Any] = {
                "@id": self.urls.manifest("2", name),
                "@type": "sc:Manifest",
                "label": _label(label),
            }
            if picture is not None:
                item["thumbnail"] = self._thumbnail_2(picture)
            manifests.append(item)
        return {
            "@context": CONTEXT_2,
            "@id": self.urls.collection("2", source),
            "@type": "sc:Collection",
            "label": source,
            "within": self.urls.collection("2"),
            "manifests": manifests,
        }
