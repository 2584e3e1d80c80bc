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

An object with text (:attr:`~.records.ObjectRecord.has_text`: its source gave a canvas its OCR)
declares Content Search: a 3.0 manifest a ``SearchService2`` (which Clover finds by type) and a
``SearchService1`` with the 1.0 profile (which Mirador and UV find by profile), each with its
autocomplete, and the search/2 context before the Presentation one; a 2.1 manifest the Search
1.0 service as that specification writes it (Search 2.0 is declared on 3.0 resources). Each
canvas with text names its OCR file (``seeAlso``: a label naming its format, and the format
and profile when its name told them) and the page of its line annotations (3.0
``annotations``, 2.1 ``otherContent``); the object's whole text is a ``rendering``, offered as
its PDF is (it needs the same access). The search and text URLs are ``Urls``'s; what answers
them is ``search/`` and ``web/search.py``.

Restricted images (their route's ``access``: :attr:`Picture.access`) are declared as the
Authorization Flow API asks, and the documents stay the same for everyone (no answer depends on
who asks, so the caches of records and documents stay right): each of their image services
carries the policy's Auth 2.0 probe and Auth 1.0 cookie service, a 3.0 document puts the auth/2
context first, their thumbnails come from the degraded tier (or are left out when the policy has
none), and they offer no original. A restricted PDF (``PresentationService.pdf_policies``)
carries its own probe; a PDF that needs more than one policy (an object whose images, or whose
own ``access``, name several) is left out of the manifests (:func:`pdf_offered`): an Auth 2.0
client holds one token per policy and a probe sees one, so it could never get it.
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from iiif_shim.auth.documents import services as auth_services
from iiif_shim.auth.documents import with_auth2_context
from iiif_shim.auth.settings import PolicySettings
from iiif_shim.iiif.identifier import encode_identifier
from iiif_shim.iiif.profile import Format, Version
from iiif_shim.model.text import TextFormat
from iiif_shim.presentation.labels import Texts
from iiif_shim.presentation.records import CanvasRecord, ObjectRecord
from iiif_shim.presentation.settings import PresentationSettings

CONTEXT_3 = "http://iiif.io/api/presentation/3/context.json"
CONTEXT_2 = "http://iiif.io/api/presentation/2/context.json"
IMAGE_CONTEXT_2 = "http://iiif.io/api/image/2/context.json"
LEVEL2_V2 = "http://iiif.io/api/image/2/level2.json"
SEARCH_CONTEXT_2 = "http://iiif.io/api/search/2/context.json"
SEARCH_CONTEXT_1 = "http://iiif.io/api/search/1/context.json"
SEARCH_PROFILE_1 = "http://iiif.io/api/search/1/search"
AUTOCOMPLETE_PROFILE_1 = "http://iiif.io/api/search/1/autocomplete"
_VIEWING_HINTS_2 = ("paged", "continuous", "individuals")
_FORMAT_NAMES = {Format.JPG: "JPEG", Format.PNG: "PNG", Format.TIF: "TIFF", Format.WEBP: "WebP"}
# the label of a canvas's OCR file (its seeAlso), by its format; OCR_LABEL when not known
OCR_LABELS = {TextFormat.ALTO: "ALTO", TextFormat.HOCR: "hOCR", TextFormat.PLAIN: "Text"}
OCR_LABEL = "OCR"


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

    def search(self, api: str, name: str, manifest: str = "3") -> str:
        """Search service ``api`` (``"2"`` or ``"1"``) of object ``name``, its hits on the
        canvases of manifest ``manifest`` (``"3"`` or ``"2"``: their ids differ, and a viewer
        finds a hit's canvas by its id in the manifest it opened)."""
        base = f"{self.iiif}/search/{api}/{encode_identifier(name)}"
        return base if manifest == "3" else f"{base}/manifest{manifest}"

    def autocomplete(self, api: str, name: str, manifest: str = "3") -> str:
        return f"{self.search(api, name, manifest)}/autocomplete"

    def plain_text(self, name: str) -> str:
        """The whole text of object ``name``, page after page (its ``rendering``)."""
        return f"{self.iiif}/text/{encode_identifier(name)}/plain"

    def ocr(self, name: str, canvas: int) -> str:
        """The OCR file of canvas ``canvas`` (0-based) as the institution made it."""
        return f"{self.iiif}/text/{encode_identifier(name)}/{canvas + 1}/ocr"

    def canvas_text(self, version: str, name: str, canvas: int) -> str:
        """The line annotations (``supplementing``) of canvas ``canvas`` (0-based): a 3.0
        AnnotationPage (``version`` ``"3"``) or a 2.1 ``sc:AnnotationList`` (``"2"``)."""
        return f"{self.iiif}/text/{encode_identifier(name)}/{canvas + 1}/{version}"

    def canvas(self, version: str, name: str, canvas: int) -> str:
        """Canvas ``canvas`` (0-based) of object ``name``'s manifest ``version``."""
        return f"{self.manifest(version, name).removesuffix('/manifest')}/canvas/{canvas + 1}"

    def degraded(self, version: Version, identifier: str) -> str:
        """The image service of the degraded tier of a restricted image."""
        return degraded_url(self.iiif, version, identifier)

    def image_probe(self, identifier: str) -> str:
        return image_probe_url(self.site, identifier)

    def pdf_probe(self, name: str) -> str:
        return pdf_probe_url(self.site, name)


# The one place of these URLs (the HTTP side builds its own from them, and routes by them).
DEGRADED = "degraded"  # {prefix}/degraded/{version}/{identifier}: a restricted image's tier
PROBES = "/auth/probe"  # {site}/auth/probe/image/{identifier}, .../pdf/{object}


def degraded_url(iiif: str, version: Version, identifier: str) -> str:
    """The degraded tier's image service of ``identifier`` (``iiif``: site + IIIF prefix)."""
    return f"{iiif}/{DEGRADED}/{version.value}/{encode_identifier(identifier)}"


def image_probe_url(site: str, identifier: str) -> str:
    """The Auth 2.0 probe of a restricted image's service."""
    return f"{site}{PROBES}/image/{encode_identifier(identifier)}"


def pdf_probe_url(site: str, name: str) -> str:
    """The Auth 2.0 probe of a restricted object's PDF."""
    return f"{site}{PROBES}/pdf/{encode_identifier(name)}"


def pdf_offered(pdf_policies: Sequence[str]) -> bool:
    """Whether a manifest offers the object's PDF: public, or one policy covers all of it."""
    return len(pdf_policies) <= 1


def image_services(v3: str, v2: str) -> list[dict[str, Any]]:
    """References to an image's two services (``v3``, ``v2``: their ids) as Presentation 3.0
    and a probe's ``substitute`` give them: 3.0 by ``id``/``type``, 2.1 by ``@id``/``@type``
    with its full profile URI."""
    return [
        {"id": v3, "type": "ImageService3", "profile": "level2"},
        {"@id": v2, "@type": "ImageService2", "profile": LEVEL2_V2},
    ]


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
    access: str | None = None  # the policy of its route (``auth.policies``); None: public

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


_NO_POLICIES: Mapping[str, PolicySettings] = MappingProxyType({})


class Builder:
    """Builds the documents of one request (one public base) from the settings."""

    # whether documents declare objects' text and search (an export, which holds neither
    # text files nor an index, does not)
    texts: ClassVar[bool] = True

    def __init__(
        self,
        settings: PresentationSettings,
        urls: Urls,
        title: str,
        policies: Mapping[str, PolicySettings] = _NO_POLICIES,
    ) -> None:
        self.settings = settings
        self.urls = urls
        self.title = title  # the label of the top collection
        self.policies = policies  # ``auth.policies``, for restricted images and PDFs

    # --- restricted images and PDFs ----------------------------------------------------

    def auth_services(self, policy: str, probe: str, *, v3: bool) -> list[dict[str, Any]]:
        """The Auth 2.0 probe at ``probe`` and the Auth 1.0 cookie service of ``policy``."""
        return auth_services(self.policies[policy], policy, self.urls.site, probe, v3=v3)

    def _guarded(
        self, services: list[dict[str, Any]], picture: Picture, v3: bool
    ) -> list[dict[str, Any]]:
        """``services`` (of ``picture``'s image), each with its auth services when restricted."""
        if picture.access is None:
            return services
        auth = self.auth_services(picture.access, self.urls.image_probe(picture.identifier), v3=v3)
        return [{**service, "service": auth} for service in services]

    def degraded_size(self, picture: Picture) -> int | None:
        """The longest side of the degraded tier of a restricted ``picture`` (None: public, or
        a policy without one)."""
        if picture.access is None:
            return None
        degraded = self.policies[picture.access].degraded
        return None if degraded is None else degraded.max_size

    def thumb(self, picture: Picture, version: Version) -> tuple[str, tuple[int, int]] | None:
        """The thumbnail's image service (the degraded tier's for a restricted picture) and
        size; ``None`` for a restricted picture with no degraded tier (left out)."""
        if picture.access is None:
            return self.urls.service(version, picture.identifier), picture.thumb_size
        max_size = self.degraded_size(picture)
        if max_size is None:
            return None
        box = min(self.settings.thumbnail_size, max_size)
        return self.urls.degraded(version, picture.identifier), thumb_size(
            picture.width, picture.height, box
        )

    def restricted(self, pictures: Sequence[Picture]) -> bool:
        return any(picture.access is not None for picture in pictures)

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

    # --- text and search ---------------------------------------------------------------

    def searchable(self, record: ObjectRecord) -> bool:
        """Whether ``record``'s documents declare its text and search."""
        return self.texts and record.has_text

    def search_services(self, name: str) -> list[dict[str, Any]]:
        """A 3.0 resource's search services: Search 2.0 (matched by type, as Clover does) and
        Search 1.0 (matched by profile, as Mirador and UV do), each with its autocomplete."""
        urls = self.urls
        return [
            {
                "id": urls.search("2", name),
                "type": "SearchService2",
                "service": [{"id": urls.autocomplete("2", name), "type": "AutoCompleteService2"}],
            },
            {
                "@id": urls.search("1", name),
                "@type": "SearchService1",
                "profile": SEARCH_PROFILE_1,
                "service": [
                    {
                        "@id": urls.autocomplete("1", name),
                        "@type": "AutoCompleteService1",
                        "profile": AUTOCOMPLETE_PROFILE_1,
                    }
                ],
            },
        ]

    def search_service_2(self, name: str) -> dict[str, Any]:
        """A 2.1 manifest's search service: Search 1.0 as its specification writes it, its
        hits on this manifest's canvases (``Urls.search``: their ids are not the 3.0 ones)."""
        urls = self.urls
        return {
            "@context": SEARCH_CONTEXT_1,
            "@id": urls.search("1", name, "2"),
            "profile": SEARCH_PROFILE_1,
            "service": {
                "@id": urls.autocomplete("1", name, "2"),
                "profile": AUTOCOMPLETE_PROFILE_1,
            },
        }

    def plain_text(self, record: ObjectRecord, pdf_policies: Sequence[str], v3: bool) -> Any:
        """The object's whole text as a ``rendering`` (it needs what its PDF needs: offered
        with the PDF's probe when restricted, left out when the PDF is), or None."""
        if not self.searchable(record) or not pdf_offered(pdf_policies):
            return None
        url = self.urls.plain_text(record.name)
        if v3:
            text: dict[str, Any] = {
                "id": url,
                "type": "Text",
                "label": self.lang("Text"),
                "format": "text/plain",
            }
        else:
            text = {"@id": url, "label": "Text", "format": "text/plain"}
        if pdf_policies:
            probe = self.urls.pdf_probe(record.name)
            services = self.auth_services(pdf_policies[0], probe, v3=v3)
            text["service"] = services[:1] if v3 else services[0]
        return text

    def ocr(self, name: str, index: int, canvas: CanvasRecord, v3: bool) -> dict[str, Any]:
        """A canvas's OCR file as its ``seeAlso``: a label naming its format (OCR_LABELS; 3.0
        a language map, 2.1 a string), its format and profile when known."""
        assert canvas.text is not None
        kind = None if canvas.text.format is None else TextFormat(canvas.text.format)
        label = OCR_LABEL if kind is None else OCR_LABELS[kind]
        link: dict[str, Any] = (
            {"id": self.urls.ocr(name, index), "type": "Dataset", "label": self.lang(label)}
            if v3
            else {"@id": self.urls.ocr(name, index), "label": label}
        )
        if kind is not None:
            link["format"] = kind.media_type.split(";", 1)[0]
            if kind.profile is not None:
                link["profile"] = kind.profile
        return link

    # --- Presentation 3.0 --------------------------------------------------------------

    def _services(self, identifier: str) -> list[dict[str, Any]]:
        urls = self.urls
        return image_services(
            urls.service(Version.V3, identifier), urls.service(Version.V2, identifier)
        )

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

    def thumbnail(self, picture: Picture) -> dict[str, Any] | None:
        """The picture's thumbnail (its degraded tier's when restricted; ``None`` when it
        is restricted with no degraded tier)."""
        found = self.thumb(picture, Version.V3)
        if found is None:
            return None
        service, (w, h) = found
        services = self._services(picture.identifier)
        if picture.access is not None:  # the degraded tier's services
            services = image_services(service, self.urls.degraded(Version.V2, picture.identifier))
        return {
            "id": f"{service}/full/{w},{h}/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "width": w,
            "height": h,
            "service": services,
        }

    def _canvas(self, name: str, index: int, record: CanvasRecord, pic: Picture) -> dict[str, Any]:
        canvas_id = self.urls.canvas("3", name, index)
        label = record.label
        mw, mh = pic.max_size
        body = {
            "id": f"{self.urls.service(Version.V3, pic.identifier)}/full/max/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "width": mw,
            "height": mh,
            "service": self._guarded(self._services(pic.identifier), pic, True),
        }
        canvas: dict[str, Any] = {
            "id": canvas_id,
            "type": "Canvas",
            "label": self.lang(_label(label or str(index + 1))),
            "width": pic.width,
            "height": pic.height,
        }
        if (thumbnail := self.thumbnail(pic)) is not None:
            canvas["thumbnail"] = [thumbnail]
        if pic.access is None and (original := self.original(Version.V3, pic)):
            canvas["rendering"] = [original]
        if self.texts and record.text is not None:
            canvas["seeAlso"] = [self.ocr(name, index, record, True)]
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
        if self.texts and record.text is not None:  # its lines, as supplementing annotations
            canvas["annotations"] = [
                {"id": self.urls.canvas_text("3", name, index), "type": "AnnotationPage"}
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

    def manifest(
        self,
        record: ObjectRecord,
        pictures: Sequence[Picture],
        pdf_policies: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The 3.0 manifest; ``pdf_policies``: those whose access the PDF needs."""
        urls = self.urls
        manifest_id = urls.manifest("3", record.name)
        base = manifest_id.removesuffix("/manifest")
        doc: dict[str, Any] = {
            "@context": [SEARCH_CONTEXT_2, CONTEXT_3] if self.searchable(record) else CONTEXT_3,
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
        pdf: dict[str, Any] = {
            "id": urls.pdf(record.name),
            "type": "Text",
            "label": self.lang("PDF"),
            "format": "application/pdf",
        }
        if pdf_policies:
            pdf["service"] = self.auth_services(
                pdf_policies[0], urls.pdf_probe(record.name), v3=True
            )[:1]
        if pdf_offered(pdf_policies):
            doc["rendering"] = [pdf]
        if (text := self.plain_text(record, pdf_policies, True)) is not None:
            doc["rendering"].append(text)
        doc["partOf"] = [
            {
                "id": urls.collection("3", record.source),
                "type": "Collection",
                "label": self.lang(record.source),
            }
        ]
        if record.see_also:
            doc["seeAlso"] = [{"id": url, "type": "Dataset"} for url in record.see_also]
        if (thumbnail := self._first_thumbnail(pictures)) is not None:
            doc["thumbnail"] = [thumbnail]
        if record.behavior:
            doc["behavior"] = list(record.behavior)
        if record.viewing_direction:
            doc["viewingDirection"] = record.viewing_direction
        if self.searchable(record):
            doc["service"] = self.search_services(record.name)
        doc["items"] = [
            self._canvas(record.name, i, canvas, pic)
            for i, (canvas, pic) in enumerate(zip(record.canvases, pictures, strict=True))
        ]
        if record.ranges:
            doc["structures"] = [
                {
                    "id": f"{base}/range/{k + 1}",
                    "type": "Range",
                    "label": self.lang(_label(part.label)),
                    "items": [
                        {"id": urls.canvas("3", record.name, i), "type": "Canvas"}
                        for i in range(part.first, part.last + 1)
                    ],
                }
                for k, part in enumerate(record.ranges)
            ]
        if self.restricted(pictures) or pdf_policies:
            return with_auth2_context(doc)
        return doc

    def _first_thumbnail(self, pictures: Sequence[Picture]) -> dict[str, Any] | None:
        """The object's thumbnail: the first canvas's, else the first that has one."""
        return next((t for p in pictures if (t := self.thumbnail(p)) is not None), None)

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
            if picture is not None and (thumbnail := self.thumbnail(picture)) is not None:
                item["thumbnail"] = [thumbnail]
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

    def _thumbnail_2(self, picture: Picture) -> dict[str, Any] | None:
        found = self.thumb(picture, Version.V2)
        if found is None:
            return None
        service, (w, h) = found
        image_service = self._service_2(picture.identifier)
        if picture.access is not None:
            image_service = {"@context": IMAGE_CONTEXT_2, "@id": service, "profile": LEVEL2_V2}
        return {
            "@id": f"{service}/full/{w},{h}/0/default.jpg",
            "@type": "dctypes:Image",
            "format": "image/jpeg",
            "width": w,
            "height": h,
            "service": image_service,
        }

    def _guarded_2(self, picture: Picture) -> dict[str, Any]:
        service = self._service_2(picture.identifier)
        if picture.access is None:
            return service
        probe = self.urls.image_probe(picture.identifier)
        return {**service, "service": self.auth_services(picture.access, probe, v3=False)}

    def manifest_2(
        self,
        record: ObjectRecord,
        pictures: Sequence[Picture],
        pdf_policies: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The 2.1 manifest; ``pdf_policies``: those whose access the PDF needs."""
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
        if pdf_offered(pdf_policies):
            doc["rendering"] = {
                "@id": urls.pdf(record.name),
                "label": "PDF",
                "format": "application/pdf",
            }
            if pdf_policies:
                doc["rendering"]["service"] = self.auth_services(
                    pdf_policies[0], urls.pdf_probe(record.name), v3=False
                )[0]
        if (text := self.plain_text(record, pdf_policies, False)) is not None:
            doc["rendering"] = [doc["rendering"], text]
        if self.searchable(record):
            doc["service"] = [self.search_service_2(record.name)]
        doc["within"] = urls.collection("2", record.source)
        if record.see_also:
            doc["seeAlso"] = list(record.see_also)
        first = next((t for p in pictures if (t := self._thumbnail_2(p)) is not None), None)
        if first is not None:
            doc["thumbnail"] = first
        hints = [b for b in record.behavior if b in _VIEWING_HINTS_2]
        if hints:
            doc["viewingHint"] = hints[0]
        if record.viewing_direction:
            doc["viewingDirection"] = record.viewing_direction
        canvases = []
        for i, (canvas, pic) in enumerate(zip(record.canvases, pictures, strict=True)):
            canvas_id = urls.canvas("2", record.name, i)
            mw, mh = pic.max_size
            size = "full" if (mw, mh) == (pic.width, pic.height) else f"{mw},{mh}"
            original = None if pic.access else self.original(Version.V2, pic)
            thumbnail = self._thumbnail_2(pic)
            canvases.append(
                {
                    "@id": canvas_id,
                    "@type": "sc:Canvas",
                    "label": _label(canvas.label or str(i + 1)),
                    "width": pic.width,
                    "height": pic.height,
                    **({"thumbnail": thumbnail} if thumbnail else {}),
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
                                "service": self._guarded_2(pic),
                            },
                        }
                    ],
                    **(self._text_2(record.name, i, canvas) if self.texts and canvas.text else {}),
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
                        urls.canvas("2", record.name, i) for i in range(part.first, part.last + 1)
                    ],
                }
                for k, part in enumerate(record.ranges)
            ]
        return doc

    def _text_2(self, name: str, index: int, canvas: CanvasRecord) -> dict[str, Any]:
        """A 2.1 canvas's text: its OCR (``seeAlso``) and its lines (``otherContent``)."""
        return {
            "seeAlso": self.ocr(name, index, canvas, False),
            "otherContent": [
                {"@id": self.urls.canvas_text("2", name, index), "@type": "sc:AnnotationList"}
            ],
        }

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
            if picture is not None and (thumbnail := self._thumbnail_2(picture)) is not None:
                item["thumbnail"] = thumbnail
            manifests.append(item)
        return {
            "@context": CONTEXT_2,
            "@id": self.urls.collection("2", source),
            "@type": "sc:Collection",
            "label": source,
            "within": self.urls.collection("2"),
            "manifests": manifests,
        }
