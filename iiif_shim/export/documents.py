"""Manifests, collections and the index page of an export, as the export holds them: pure.

Built by the shim's own :class:`~iiif_shim.presentation.documents.Builder` with the export's
public base (``--base-url``) as its URLs, never by rewriting another host's; what differs:

- image services declare level 0 (3.0 ``level0``, 2.1 the level-0 profile URI), and only the
  versions exported are named;
- what the export does not hold is left out: the PDF (``rendering``), the object page
  (``homepage``, 2.1 ``related``), the original image (a canvas's ``rendering``), an object's
  text and search (its services, its canvases' OCR and lines: no text files, no index);
- a collection lists the objects the folder holds (``run.py``: its record), so every
  ``partOf``/``within`` resolves.

Every image URL a document names (canvases' images, thumbnails) is found by
:func:`image_urls`, so the image plans can hold them (``plan.py``: ``extras``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from iiif_shim.export.plan import LEVEL0_V2, Extra
from iiif_shim.iiif.profile import Version
from iiif_shim.presentation.documents import Builder, Picture, Urls
from iiif_shim.presentation.records import ObjectRecord
from iiif_shim.presentation.settings import PresentationSettings

_IMAGE_CONTEXT_2 = "http://iiif.io/api/image/2/context.json"


class Level0Builder(Builder):
    """The shim's documents with level-0 services of the exported versions, and without what
    an export does not hold."""

    texts = False  # no text files, no search index

    def __init__(
        self,
        settings: PresentationSettings,
        urls: Urls,
        title: str,
        versions: Sequence[Version],
    ) -> None:
        super().__init__(settings, urls, title)
        self.versions = tuple(versions)

    def _services(self, identifier: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if Version.V3 in self.versions:
            out.append(
                {
                    "id": self.urls.service(Version.V3, identifier),
                    "type": "ImageService3",
                    "profile": "level0",
                }
            )
        if Version.V2 in self.versions:
            out.append(
                {
                    "@id": self.urls.service(Version.V2, identifier),
                    "@type": "ImageService2",
                    "profile": LEVEL0_V2,
                }
            )
        return out

    def _service_2(self, identifier: str) -> dict[str, Any]:
        return {
            "@context": _IMAGE_CONTEXT_2,
            "@id": self.urls.service(Version.V2, identifier),
            "profile": LEVEL0_V2,
        }

    def original(self, version: Version, picture: Picture) -> dict[str, Any] | None:
        return None  # originals are not exported

    def exported_manifest(
        self, version: Version, record: ObjectRecord, pictures: Sequence[Picture]
    ) -> dict[str, Any]:
        if version is Version.V3:
            doc = self.manifest(record, pictures)
            doc.pop("homepage", None)
            doc.pop("rendering", None)
            return doc
        doc = self.manifest_2(record, pictures)
        doc.pop("related", None)
        doc.pop("rendering", None)
        return doc

    def exported_collection(
        self, version: Version, source: str, entries: Sequence[tuple[str, str, Picture | None]]
    ) -> dict[str, Any]:
        if version is Version.V3:
            return self.collection(source, entries)
        return self.collection_2(source, entries)

    def exported_top(self, version: Version, sources: Sequence[str]) -> dict[str, Any]:
        if version is Version.V3:
            return self.top_collection(sources)
        return self.top_collection_2(sources)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def image_urls(doc: dict[str, Any], iiif_base: str) -> list[tuple[str, Extra]]:
    """(identifier, request) of every image URL of the Image API in ``doc``."""
    found: list[tuple[str, Extra]] = []
    for version in Version:
        head = f"{iiif_base}/{version.value}/"
        for text in _strings(doc):
            if not text.startswith(head):
                continue
            segments = text[len(head) :].split("/")
            if len(segments) != 5:
                continue
            encoded, region, size, rotation, quality_format = segments
            request = (version, unquote(region), unquote(size), rotation, quality_format)
            found.append((unquote(encoded), request))
    return found


def index_page(
    title: str,
    objects: Sequence[tuple[str, dict[str, str]]],
    images: Sequence[tuple[str, dict[str, str]]],
) -> str:
    """``index.html``: each object (label, its manifests by version) and each image
    (identifier, its info.json by version)."""

    def links(urls: dict[str, str]) -> str:
        return " ".join(
            f'<a href="{html.escape(url)}">{html.escape(what)}</a>' for what, url in urls.items()
        )

    rows_o = "".join(f"<li>{html.escape(label)}: {links(u)}</li>\n" for label, u in objects)
    rows_i = "".join(f"<li><code>{html.escape(i)}</code>: {links(u)}</li>\n" for i, u in images)
    parts = [
        '<!doctype html>\n<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n",
    ]
    if objects:
        parts.append(f"<h2>Objects ({len(objects)})</h2>\n<ul>\n{rows_o}</ul>\n")
    parts.append(f"<h2>Images ({len(images)})</h2>\n<ul>\n{rows_i}</ul>\n</body></html>\n")
    return "".join(parts)
