"""Validity checks for the Presentation documents the shim generates, used by the tests.

``check_v3`` owns the Presentation API 3.0 rules for manifests and collections of images: the
rules of the specification (IIIF/api ``source/presentation/3.0/index.md``) and of the official
validator's JSON Schema (IIIF/presentation-validator ``schema/iiif_3_0.json``) that apply to
what a generator of image manifests produces, written as one small function per class. Every
problem names the JSON path of the value it is about, e.g.
``items[0].items[0].items[0].body.format: ...``. It is stricter than the validator where the
specification is (a navDate needs a timezone, labels need an entry, ``@context`` only at the
top, a painting annotation targets its own Canvas, Range items name Canvases of the manifest)
and it leaves out what image manifests do not use (time-based media details, navPlace,
selectors beyond their ``type``, annotation collections).

``check_v2`` owns Presentation 2.1: it runs iiif-prezi's ``ManifestReader`` (what the official
validator runs for 2.x), with the JSON-LD contexts that reader's expansion step dereferences
served from local data (with the Search 1.0 context a 2.1 manifest's search service names, and
the Auth contexts its restricted resources name);
any other context URL is an error, never a network fetch.

Both return a list of problems; an empty list means the document is valid.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Node = dict[str, Any]

CONTEXT_3 = "http://iiif.io/api/presentation/3/context.json"
CONTEXT_2 = "http://iiif.io/api/presentation/2/context.json"
IMAGE_CONTEXT_2 = "http://iiif.io/api/image/2/context.json"

# --- Presentation 3.0 ----------------------------------------------------------------------

CONTENT_TYPES = frozenset({"Dataset", "Image", "Model", "Sound", "Text", "Video"})

# The service types the 3.0 spec keeps from older APIs; those keep their @id/@type names.
LEGACY_SERVICES = frozenset(
    {
        "ImageService1",
        "ImageService2",
        "SearchService1",
        "AutoCompleteService1",
        "AuthCookieService1",
        "AuthTokenService1",
        "AuthLogoutService1",
    }
)
IMAGE_2_PROFILES = frozenset(f"http://iiif.io/api/image/2/level{n}.json" for n in range(3))
IMAGE_3_PROFILES = frozenset({"level0", "level1", "level2"})

# A Manifest's properties in 3.0; the validator's schema refuses every other key on a Manifest.
MANIFEST_KEYS = frozenset(
    {
        "@context", "id", "type", "label", "metadata", "summary", "requiredStatement",
        "rights", "navDate", "navPlace", "provider", "thumbnail", "homepage", "rendering",
        "seeAlso", "partOf", "service", "services", "behavior", "viewingDirection", "start",
        "items", "structures", "annotations", "placeholderCanvas", "accompanyingCanvas",
    }
)  # fmt: skip
# The schema is closed for AnnotationPages too (no behavior, metadata, summary...).
ANNOTATION_PAGE_KEYS = frozenset(
    {"@context", "id", "type", "label", "items", "rendering", "service", "thumbnail",
     "partOf", "next", "prev", "first", "last"}
)  # fmt: skip

# Where each behavior value is valid (3.0 spec, behavior table).
_TEMPORAL = {"auto-advance", "no-auto-advance"}
_LAYOUT = {"unordered", "individuals", "continuous", "paged"}
BEHAVIORS: dict[str, frozenset[str]] = {
    "Collection": frozenset(
        _TEMPORAL | _LAYOUT | {"repeat", "no-repeat", "multi-part", "together"}
    ),
    "Manifest": frozenset(_TEMPORAL | _LAYOUT | {"repeat", "no-repeat"}),
    "Canvas": frozenset(_TEMPORAL | {"facing-pages", "non-paged"}),
    "Range": frozenset(_TEMPORAL | _LAYOUT | {"sequence", "thumbnail-nav", "no-nav"}),
    "Annotation": frozenset({"hidden"}),
}
# Values a resource must not have two of (each value's "disjoint with" list in the spec).
DISJOINT_BEHAVIORS = (
    frozenset(_TEMPORAL),
    frozenset({"repeat", "no-repeat"}),
    frozenset(_LAYOUT),
    frozenset({"paged", "facing-pages", "non-paged"}),
    frozenset({"multi-part", "together"}),
    frozenset({"sequence", "thumbnail-nav", "no-nav"}),
)
VIEWING_DIRECTIONS = frozenset({"left-to-right", "right-to-left", "top-to-bottom", "bottom-to-top"})

# Properties the spec allows only on some of the classes checked here ("other types of
# resource MUST NOT have ..."). Content resources and services are checked separately and
# are where format, language and the dimensions belong.
ONLY_ON: dict[str, frozenset[str]] = {
    "navDate": frozenset({"Collection", "Manifest", "Range", "Canvas"}),
    "viewingDirection": frozenset({"Collection", "Manifest", "Range"}),
    "start": frozenset({"Manifest", "Range"}),
    "structures": frozenset({"Manifest"}),
    "services": frozenset({"Collection", "Manifest"}),
    "width": frozenset({"Canvas"}),
    "height": frozenset({"Canvas"}),
    "duration": frozenset({"Canvas"}),
    "format": frozenset(),
    "language": frozenset(),
}

# The schema's rights patterns: Creative Commons or RightsStatements.org, http:// only.
RIGHTS = re.compile(
    r"^http://(creativecommons\.org/(licenses|publicdomain)/|rightsstatements\.org/vocab/)"
)
# Language map keys as the schema accepts them: "none" or letters and hyphens (BCP 47 also
# allows digits, e.g. es-419, but the official validator refuses those).
LANGUAGE = re.compile(r"^(none|[a-zA-Z-]+)$")
MEDIA_TYPE = re.compile(r"^[a-z]+/.+$")
# xsd:dateTime with a timezone (Z or +hh:mm / -hh:mm).
NAV_DATE = re.compile(r"^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
UNSAFE_TAGS = frozenset({"script", "style", "object", "form", "input", "iframe", "embed"})


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _a(name: object) -> str:
    text = str(name)
    return f"an {text}" if text[:1] in "AEIOU" else f"a {text}"


def _one_of(value: Any, options: frozenset[str]) -> bool:
    return isinstance(value, str) and value in options


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _looks_like_html(text: str) -> bool:
    return text.startswith("<") and text.endswith(">")


def _service_id(service: Any) -> Any:
    return service.get("id", service.get("@id")) if isinstance(service, dict) else None


class _V3:
    """One walk over a 3.0 document; the problems found so far."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.canvas_ids: set[str] = set()

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '(document)'}: {message}")

    # --- values --------------------------------------------------------------------------

    def obj(self, value: Any, path: str) -> Node | None:
        if isinstance(value, dict):
            return value
        self.fail(path, f"must be a JSON object, got {type(value).__name__}")
        return None

    def array(self, node: Node, key: str, path: str, *, required: bool = False) -> list[Any]:
        """``node[key]`` as a list, or [] after reporting why it is not one."""
        where = _key(path, key)
        if key not in node:
            if required:
                self.fail(where, "required")
            return []
        value = node[key]
        if not isinstance(value, list):
            self.fail(where, "must be an array, even with one value")
            return []
        return value

    def items(
        self, node: Node, key: str, path: str, *, required: bool = False
    ) -> Iterator[tuple[str, Node]]:
        """The objects of the array ``node[key]`` with their paths (non-objects reported)."""
        for i, value in enumerate(self.array(node, key, path, required=required)):
            where = f"{_key(path, key)}[{i}]"
            item = self.obj(value, where)
            if item is not None:
                yield where, item

    def uri(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.fail(path, "must be a string URI")
            return
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.fail(path, f"must be an http(s) URI, got {value!r}")
        elif re.search(r"\s", value):
            self.fail(path, f"has unencoded whitespace: {value!r}")

    def id(self, node: Node, path: str) -> None:
        if "id" not in node:
            self.fail(_key(path, "id"), "required")
        else:
            self.uri(node["id"], _key(path, "id"))

    def type(self, node: Node, path: str, *expected: str) -> None:
        where = _key(path, "type")
        if "type" not in node:
            self.fail(where, f"required ({' or '.join(expected)})")
        elif node["type"] not in expected:
            self.fail(where, f"must be {' or '.join(expected)}, got {node['type']!r}")

    def language_map(self, value: Any, path: str, *, html: bool = False) -> None:
        """``{"en": ["..."], "none": ["..."]}``; HTML only where ``html`` allows it."""
        if not isinstance(value, dict):
            self.fail(path, f"must be a language map like {{'en': ['...']}}, got {value!r}")
            return
        if not value:
            self.fail(path, "a language map needs at least one entry")
        for lang, texts in value.items():
            where = f"{path}.{lang}"
            if not LANGUAGE.match(lang):
                self.fail(where, f"{lang!r} is not a language code or 'none'")
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                self.fail(where, f"must be an array of strings, got {texts!r}")
                continue
            for i, text in enumerate(texts):
                if html:
                    self.html(text, f"{where}[{i}]")
                elif _looks_like_html(text):
                    self.fail(
                        f"{where}[{i}]", "HTML is not allowed here (only in summary and values)"
                    )

    def html(self, text: str, path: str) -> None:
        """A value a client reads as HTML must be one well-formed element with no scripts."""
        if not _looks_like_html(text):
            if _looks_like_html(text.strip()):
                self.fail(path, "HTML must have no whitespace before '<' or after '>'")
            return
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            self.fail(path, f"HTML must be well-formed XML: {exc}")
            return
        for element in root.iter():
            if element.tag in UNSAFE_TAGS:
                self.fail(path, f"HTML must not contain <{element.tag}>")

    def label(self, node: Node, path: str, *, required: bool) -> None:
        if "label" in node:
            self.language_map(node["label"], _key(path, "label"))
        elif required:
            self.fail(_key(path, "label"), "required")

    def key_value(self, value: Any, path: str) -> None:
        pair = self.obj(value, path)
        if pair is None:
            return
        for part in ("label", "value"):
            if part not in pair:
                self.fail(_key(path, part), "required")
            else:
                self.language_map(pair[part], _key(path, part), html=part == "value")

    def media_type(self, node: Node, path: str) -> None:
        if "format" in node:
            value = node["format"]
            if not isinstance(value, str) or not MEDIA_TYPE.match(value):
                self.fail(_key(path, "format"), f"must be a media type like image/jpeg: {value!r}")

    def nav_date(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or not NAV_DATE.match(value):
            self.fail(path, f"must be an xsd:dateTime with a timezone, got {value!r}")
            return
        if re.match(r"^\d{4}-", value):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                self.fail(path, f"is not a real date and time: {value!r}")

    def behavior(self, node: Node, path: str, cls: str) -> None:
        values = self.array(node, "behavior", path)
        where = _key(path, "behavior")
        allowed = BEHAVIORS.get(cls, frozenset())
        for i, value in enumerate(values):
            if not isinstance(value, str) or value not in allowed:
                self.fail(f"{where}[{i}]", f"{value!r} is not a behavior of {_a(cls)}")
        present = {v for v in values if isinstance(v, str)}
        for group in DISJOINT_BEHAVIORS:
            clash = sorted(present & group)
            if len(clash) > 1:
                self.fail(where, f"{' and '.join(clash)} are disjoint")

    def placement(self, node: Node, path: str, cls: str) -> None:
        """Properties this class must not have."""
        for key, classes in ONLY_ON.items():
            if key in node and cls not in classes:
                self.fail(_key(path, key), f"not allowed on {_a(cls)}")

    # --- properties shared by the classes ------------------------------------------------

    def common(self, node: Node, path: str, cls: str) -> None:
        """The descriptive, rights, linking and behaviour properties any class may carry."""
        self.placement(node, path, cls)
        if "summary" in node:
            self.language_map(node["summary"], _key(path, "summary"), html=True)
        for i, pair in enumerate(self.array(node, "metadata", path)):
            self.key_value(pair, f"{_key(path, 'metadata')}[{i}]")
        if "requiredStatement" in node:
            self.key_value(node["requiredStatement"], _key(path, "requiredStatement"))
        if "rights" in node:
            rights = node["rights"]
            if not isinstance(rights, str) or not RIGHTS.match(rights):
                self.fail(
                    _key(path, "rights"),
                    "must be an http:// Creative Commons or RightsStatements.org URI, "
                    f"got {rights!r}",
                )
        if "navDate" in node:
            self.nav_date(node["navDate"], _key(path, "navDate"))
        if "viewingDirection" in node and not _one_of(node["viewingDirection"], VIEWING_DIRECTIONS):
            self.fail(_key(path, "viewingDirection"), f"unknown value {node['viewingDirection']!r}")
        self.behavior(node, path, cls)
        for where, thumb in self.items(node, "thumbnail", path):
            self.content(thumb, where)
        for where, agent in self.items(node, "provider", path):
            self.agent(agent, where)
        self.linked(node, path)
        self.services(node, "service", path)

    def linked(self, node: Node, path: str) -> None:
        """homepage, rendering, seeAlso and partOf: arrays of resources with id and type."""
        for key, needs_label in (
            ("homepage", True),
            ("rendering", True),
            ("seeAlso", False),
            ("partOf", False),
        ):
            for where, link in self.items(node, key, path):
                self.id(link, where)
                if not isinstance(link.get("type"), str):
                    self.fail(_key(where, "type"), "required")
                self.label(link, where, required=needs_label)
                self.media_type(link, where)
                if "profile" in link and not isinstance(link["profile"], str):
                    self.fail(_key(where, "profile"), "must be a string")
                for i, lang in enumerate(self.array(link, "language", where)):
                    if not isinstance(lang, str) or not LANGUAGE.match(lang):
                        self.fail(f"{_key(where, 'language')}[{i}]", f"not a language: {lang!r}")

    def services(self, node: Node, key: str, path: str) -> None:
        for where, service in self.items(node, key, path):
            self.service(service, where)

    def service(self, node: Node, path: str) -> None:
        """Image API 3 services use id/type, Image API 2 (and other older ones) @id/@type."""
        kind = node.get("type", node.get("@type"))
        if _one_of(kind, LEGACY_SERVICES) or (kind is None and "@id" in node):
            for new, old in (("id", "@id"), ("type", "@type")):
                if new in node:
                    self.fail(_key(path, new), f"{_a(kind or 'service')} uses {old}, not {new}")
            if "@id" not in node:
                self.fail(_key(path, "@id"), "required")
            else:
                self.uri(node["@id"], _key(path, "@id"))
            if "@type" not in node:
                self.fail(_key(path, "@type"), "required")
        else:
            for new, old in (("id", "@id"), ("type", "@type")):
                if old in node:
                    self.fail(_key(path, old), f"{_a(kind or 'service')} uses {new}, not {old}")
            self.id(node, path)
            if not isinstance(node.get("type"), str):
                self.fail(_key(path, "type"), "required")
        profile = node.get("profile")
        if "profile" in node and not isinstance(profile, str):
            self.fail(_key(path, "profile"), f"must be a string, got {profile!r}")
        elif kind == "ImageService3" and profile not in IMAGE_3_PROFILES:
            self.fail(_key(path, "profile"), f"must be level0, level1 or level2, got {profile!r}")
        elif kind == "ImageService2" and profile not in IMAGE_2_PROFILES:
            self.fail(
                _key(path, "profile"),
                f"must be an Image API 2 compliance level URI, got {profile!r}",
            )
        self.services(node, "service", path)

    # --- content resources ---------------------------------------------------------------

    def content(self, node: Node, path: str, *, other_types: bool = False) -> None:
        """An Image, Text... (or a Choice, SpecificResource or TextualBody around one).

        The spec's content types are a SHOULD; ``other_types`` lets the bodies of
        non-painting annotations use extension types, as the validator does.
        """
        kind = node.get("type")
        if kind == "Choice":
            for where, item in self.items(node, "items", path, required=True):
                self.content(item, where, other_types=other_types)
            return
        if kind == "SpecificResource":
            if "source" not in node:
                self.fail(_key(path, "source"), "required")
            elif isinstance(node["source"], dict):
                source, where = node["source"], _key(path, "source")
                if _one_of(source.get("type"), CONTENT_TYPES):
                    self.content(source, where)
                else:  # a Canvas or another IIIF resource, by reference
                    self.id(source, where)
                    if not isinstance(source.get("type"), str):
                        self.fail(_key(where, "type"), "required")
            else:
                self.uri(node["source"], _key(path, "source"))
            return
        if kind == "Feature":  # a GeoJSON body (an annotation placing a Canvas on a map)
            if not isinstance(node.get("geometry"), dict):
                self.fail(_key(path, "geometry"), "required, a GeoJSON geometry")
            return
        if kind == "TextualBody":
            if not isinstance(node.get("value"), str):
                self.fail(_key(path, "value"), "required, a string")
            return
        if not isinstance(kind, str) or not (other_types or _one_of(kind, CONTENT_TYPES)):
            self.fail(
                _key(path, "type"),
                f"must be one of {', '.join(sorted(CONTENT_TYPES))}, got {kind!r}",
            )
        self.id(node, path)
        self.media_type(node, path)
        for key in ("width", "height"):
            if key in node and not (_is_int(node[key]) and node[key] > 0):
                self.fail(_key(path, key), f"must be a positive integer, got {node[key]!r}")
        if "duration" in node and not (_is_number(node["duration"]) and node["duration"] > 0):
            self.fail(_key(path, "duration"), "must be a positive number")
        self.label(node, path, required=False)
        for where, thumb in self.items(node, "thumbnail", path):
            self.content(thumb, where)
        self.services(node, "service", path)
        own = node.get("id")
        services = node.get("service")
        if not isinstance(services, list):
            services = []
        if own is not None and own in [_service_id(s) for s in services]:
            self.fail(_key(path, "id"), "must be an image URL, not the bare image service URI")

    def agent(self, node: Node, path: str) -> None:
        self.id(node, path)
        self.type(node, path, "Agent")
        self.label(node, path, required=True)
        self.placement(node, path, "Agent")
        for where, logo in self.items(node, "logo", path):
            self.type(logo, where, "Image")
            self.content(logo, where)
        self.linked(node, path)

    # --- structural classes --------------------------------------------------------------

    def manifest(self, node: Node, path: str) -> None:
        for key in node:
            if key not in MANIFEST_KEYS:
                self.fail(_key(path, key), "not a Manifest property (the schema allows no others)")
        self.id(node, path)
        self.type(node, path, "Manifest")
        self.label(node, path, required=True)
        self.common(node, path, "Manifest")
        canvases = list(self.items(node, "items", path, required=True))
        if "items" in node and isinstance(node["items"], list) and not node["items"]:
            self.fail(_key(path, "items"), "a Manifest needs at least one Canvas")
        self.canvas_ids = {c["id"] for _, c in canvases if isinstance(c.get("id"), str)}
        seen: set[str] = set()
        for where, canvas in canvases:
            self.canvas(canvas, where)
            cid = canvas.get("id")
            if isinstance(cid, str):
                if cid in seen:
                    self.fail(_key(where, "id"), f"two Canvases have the id {cid!r}")
                seen.add(cid)
        for where, part in self.items(node, "structures", path):
            self.range(part, where, top=True)
        if "start" in node:
            self.start(node["start"], _key(path, "start"))
        for key in ("placeholderCanvas", "accompanyingCanvas"):
            if key in node:
                extra = self.obj(node[key], _key(path, key))
                if extra is not None:
                    self.canvas(extra, _key(path, key))
        self.annotation_pages(node, path)
        self.services(node, "services", path)

    def collection(self, node: Node, path: str, *, top: bool) -> None:
        self.id(node, path)
        self.type(node, path, "Collection")
        self.label(node, path, required=True)
        self.common(node, path, "Collection")
        if "services" in node and not top:
            self.fail(_key(path, "services"), "only on the top-most resource")
        self.services(node, "services", path)
        self.annotation_pages(node, path)
        for where, item in self.items(node, "items", path, required=True):
            kind = item.get("type")
            if kind == "Collection" and "items" in item:
                self.collection(item, where, top=False)
            elif kind in ("Collection", "Manifest"):
                self.reference(item, where)
            else:
                self.fail(_key(where, "type"), f"must be Manifest or Collection, got {kind!r}")

    def reference(self, node: Node, path: str) -> None:
        """A Manifest or Collection named by a Collection: id, type and label, never items."""
        self.id(node, path)
        self.label(node, path, required=True)
        if "items" in node:
            self.fail(_key(path, "items"), "a Collection references Manifests, never embeds them")
        self.common(node, path, str(node.get("type")))

    def canvas(self, node: Node, path: str) -> None:
        self.id(node, path)
        cid = node.get("id")
        if isinstance(cid, str) and "#" in cid:
            self.fail(_key(path, "id"), f"a Canvas id must not have a fragment: {cid!r}")
        self.type(node, path, "Canvas")
        self.label(node, path, required=False)
        self.dimensions(node, path)
        self.common(node, path, "Canvas")
        for where, page in self.items(node, "items", path, required=True):
            self.annotation_page(page, where, painting_on=cid if isinstance(cid, str) else "")
        self.annotation_pages(node, path)

    def dimensions(self, node: Node, path: str) -> None:
        sized = [key for key in ("width", "height") if key in node]
        if len(sized) == 1:
            missing = "height" if sized == ["width"] else "width"
            self.fail(_key(path, missing), f"required with {sized[0]} (they go together)")
        for key in sized:
            if not (_is_int(node[key]) and node[key] > 0):
                self.fail(_key(path, key), f"must be a positive integer, got {node[key]!r}")
        if "duration" in node and not (_is_number(node["duration"]) and node["duration"] > 0):
            self.fail(_key(path, "duration"), "must be a positive number")
        if not sized and "duration" not in node:
            self.fail(_key(path, "height"), "a Canvas needs width and height (or a duration)")

    def annotation_pages(self, node: Node, path: str) -> None:
        """``annotations``: pages of non-painting annotations, embedded or referenced."""
        for where, page in self.items(node, "annotations", path):
            if "items" in page:
                self.annotation_page(page, where, painting_on=None)
            else:
                self.id(page, where)
                self.type(page, where, "AnnotationPage")

    def annotation_page(self, node: Node, path: str, *, painting_on: str | None) -> None:
        for key in node:
            if key not in ANNOTATION_PAGE_KEYS:
                self.fail(_key(path, key), "not an AnnotationPage property")
        self.id(node, path)
        self.type(node, path, "AnnotationPage")
        self.label(node, path, required=False)
        for where, annotation in self.items(node, "items", path, required=True):
            self.annotation(annotation, where, painting_on)

    def annotation(self, node: Node, path: str, painting_on: str | None) -> None:
        self.id(node, path)
        self.type(node, path, "Annotation")
        self.placement(node, path, "Annotation")
        self.behavior(node, path, "Annotation")
        motivation = node.get("motivation")
        motivations = motivation if isinstance(motivation, list) else [motivation]
        if "motivation" not in node:
            self.fail(_key(path, "motivation"), "required")
        elif not all(isinstance(m, str) for m in motivations):
            self.fail(_key(path, "motivation"), "must be a string or an array of strings")
        elif painting_on is not None and "painting" not in motivations:
            self.fail(_key(path, "motivation"), f"must be painting in a Canvas, got {motivation!r}")
        if "body" not in node:
            self.fail(_key(path, "body"), "required")
        else:
            bodies = node["body"] if isinstance(node["body"], list) else [node["body"]]
            for i, body in enumerate(bodies):
                where = _key(path, "body") + (f"[{i}]" if isinstance(node["body"], list) else "")
                resource = self.obj(body, where)
                if resource is not None:
                    self.content(resource, where, other_types=painting_on is None)
        if "target" not in node:
            self.fail(_key(path, "target"), "required")
        elif painting_on is not None and not _targets(node["target"], painting_on):
            self.fail(_key(path, "target"), f"must be the Canvas id {painting_on!r}")

    def range(self, node: Node, path: str, *, top: bool) -> None:
        self.id(node, path)
        self.type(node, path, "Range")
        self.label(node, path, required=False)
        self.common(node, path, "Range")
        behaviors = node.get("behavior")
        if not top and isinstance(behaviors, list) and "sequence" in behaviors:
            self.fail(_key(path, "behavior"), "a sequence Range belongs directly in structures")
        if "start" in node:
            self.start(node["start"], _key(path, "start"))
        self.annotation_pages(node, path)
        parts = list(self.items(node, "items", path, required=True))
        if "items" in node and node["items"] == []:
            self.fail(_key(path, "items"), "a Range needs at least one item")
        for where, item in parts:
            kind = item.get("type")
            if kind == "Range":
                if "items" in item:
                    self.range(item, where, top=False)
                else:
                    self.id(item, where)
            elif kind == "Canvas":
                self.canvas_ref(item.get("id"), _key(where, "id"))
            elif kind == "SpecificResource":
                self.canvas_part(item, where)
            else:
                self.fail(
                    _key(where, "type"),
                    f"must be Range, Canvas or SpecificResource, got {kind!r}",
                )

    def canvas_ref(self, value: Any, path: str) -> None:
        """A URI naming one of this manifest's Canvases (a #fragment names part of one)."""
        if value is None:
            self.fail(path, "required")
            return
        self.uri(value, path)
        known = self.canvas_ids
        if isinstance(value, str) and known and value.split("#", 1)[0] not in known:
            self.fail(path, f"names no Canvas of this Manifest: {value!r}")

    def canvas_part(self, node: Node, path: str) -> None:
        """A SpecificResource whose source is a Canvas (by URI or as {id, type: Canvas})."""
        self.type(node, path, "SpecificResource")
        source = node.get("source")
        where = _key(path, "source")
        if source is None:
            self.fail(where, "required (the Canvas)")
        elif isinstance(source, dict):
            self.type(source, where, "Canvas")
            self.canvas_ref(source.get("id"), _key(where, "id"))
        else:
            self.canvas_ref(source, where)

    def start(self, value: Any, path: str) -> None:
        node = self.obj(value, path)
        if node is None:
            return
        if node.get("type") == "SpecificResource":
            self.canvas_part(node, path)
        else:
            self.type(node, path, "Canvas", "SpecificResource")
            self.canvas_ref(node.get("id"), _key(path, "id"))

    # --- the document --------------------------------------------------------------------

    def context(self, doc: Node) -> None:
        """Top-level @context: the 3 context, or an array with it last."""
        if "@context" not in doc:
            self.fail("@context", "required on the top-level resource")
            return
        value = doc["@context"]
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.uri(item, f"@context[{i}]")
            if not value or value[-1] != CONTEXT_3:
                self.fail("@context", f"{CONTEXT_3} must be the last context")
        elif value != CONTEXT_3:
            self.fail("@context", f"must be {CONTEXT_3} (or an array ending with it)")

    def embedded_contexts(self, value: Any, path: str) -> None:
        """No @context below the top (and none inside services)."""
        if isinstance(value, dict):
            for key, sub in value.items():
                if key == "@context" and path:
                    self.fail(_key(path, key), "only the top-level resource has @context")
                self.embedded_contexts(sub, _key(path, key))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                self.embedded_contexts(sub, f"{path}[{i}]")


def _targets(target: Any, canvas_id: str) -> bool:
    """Whether an annotation target is the Canvas (or part of it)."""
    if isinstance(target, str):
        return target.split("#", 1)[0] == canvas_id
    if isinstance(target, dict):
        if target.get("type") == "SpecificResource":
            return _targets(target.get("source"), canvas_id)
        return target.get("type") == "Canvas" and _targets(target.get("id"), canvas_id)
    return False


def check_v3(doc: Node) -> list[str]:
    """Every problem of a Presentation 3.0 Manifest or Collection; [] when valid."""
    raw: object = doc  # parsed JSON: the caller may hand over an array or a string
    if not isinstance(raw, dict):
        return [f"(document): must be a JSON object, got {type(raw).__name__}"]
    walk = _V3()
    walk.context(doc)
    kind = doc.get("type")
    if kind == "Manifest":
        walk.manifest(doc, "")
    elif kind == "Collection":
        walk.collection(doc, "", top=True)
    else:
        walk.fail("type", f"the top-level resource must be a Manifest or Collection, got {kind!r}")
    walk.embedded_contexts(doc, "")
    return walk.problems


# --- Presentation 2.1 ----------------------------------------------------------------------

# The Image API 2 context's prefixes and the terms an image service inside a 2.1 document
# uses. Its feature-name terms are left out: those only appear as values of `supports`, which
# JSON-LD expands as IRIs, not as terms, so expansion succeeds or fails the same way.
_IMAGE_2_CONTEXT: Node = {
    "@context": {
        "iiif": "http://iiif.io/api/image/2#",
        "xsd": "http://www.w3.org/2001/XMLSchema#",
        "exif": "http://www.w3.org/2003/12/exif/ns#",
        "dcterms": "http://purl.org/dc/terms/",
        "doap": "http://usefulinc.com/ns/doap#",
        "svcs": "http://rdfs.org/sioc/services#",
        "sc": "http://iiif.io/api/presentation/2#",
        "height": {"@id": "exif:height", "@type": "xsd:integer"},
        "width": {"@id": "exif:width", "@type": "xsd:integer"},
        "scale_factors": {"@id": "iiif:scaleFactor", "@type": "xsd:integer"},
        "formats": {"@id": "iiif:format", "@type": "xsd:string"},
        "qualities": {"@id": "iiif:quality", "@type": "xsd:string"},
        "sizes": {"@id": "iiif:size", "@type": "@id"},
        "tiles": {"@id": "iiif:tile", "@type": "@id"},
        "profile": {"@id": "dcterms:conformsTo", "@type": "@id"},
        "protocol": {"@id": "doap:implements", "@type": "@id"},
        "supports": {"@id": "iiif:supports", "@type": "@id"},
        "service": {"@id": "svcs:has_service", "@type": "@id"},
    }
}

# The Search 1.0 context (IIIF/api source/search/1/context.json), which the search service of
# a 2.1 manifest names, as the Search 1.0 specification writes that service.
AUTH_CONTEXT_1 = "http://iiif.io/api/auth/1/context.json"
AUTH_CONTEXT_2 = "http://iiif.io/api/auth/2/context.json"
# The Auth 1.0 context as published (IIIF/api source/api/auth/1/context.json).
_AUTH_1_CONTEXT: Node = {
    "@context": {
        "iiif": "http://iiif.io/api/image/2#",
        "sc": "http://iiif.io/api/presentation/2#",
        "auth": "http://iiif.io/api/auth/1#",
        "dcterms": "http://purl.org/dc/terms/",
        "doap": "http://usefulinc.com/ns/doap#",
        "svcs": "http://rdfs.org/sioc/services#",
        "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
        "profile": {"@id": "doap:implements", "@type": "@id"},
        "service": {"@type": "@id", "@id": "svcs:has_service"},
        "label": {"@id": "rdfs:label"},
        "description": {"@id": "dc:description"},
        "confirmLabel": {"@id": "auth:confirmLabel"},
        "header": {"@id": "auth:header"},
        "failureHeader": {"@id": "auth:failureHeader"},
        "failureDescription": {"@id": "auth:failureDescriptiom"},
    }
}
# Not the published Auth 2.0 context (no copy is kept here): the terms a 2.1 document's
# restricted PDF and text carry (its probe service), mapped so that expansion keeps them.
_AUTH_2_CONTEXT: Node = {
    "@context": {
        "auth2": "http://iiif.io/api/auth/2#",
        "id": "@id",
        "type": "@type",
        "service": {"@id": "auth2:service", "@type": "@id"},
        "profile": {"@id": "auth2:profile"},
        "label": {"@id": "auth2:label"},
        "heading": {"@id": "auth2:heading"},
        "note": {"@id": "auth2:note"},
        "confirmLabel": {"@id": "auth2:confirmLabel"},
        "errorHeading": {"@id": "auth2:errorHeading"},
        "errorNote": {"@id": "auth2:errorNote"},
    }
}
SEARCH_CONTEXT_1 = "http://iiif.io/api/search/1/context.json"
_SEARCH_1_CONTEXT: Node = {
    "@context": {
        "search": "http://iiif.io/api/search/1#",
        "ignored": {"@id": "search:ignored", "@container": "@set"},
        "match": {"@id": "search:match"},
        "before": {"@id": "search:before"},
        "after": {"@id": "search:after"},
        "count": {"@id": "search:count"},
        "hits": {"@id": "search:hasHitList", "@container": "@list", "@type": "@id"},
        "terms": {"@id": "search:hasTermList", "@container": "@list", "@type": "@id"},
        "annotations": {"@id": "search:refines", "@container": "@set", "@type": "@id"},
        "selectors": {"@id": "search:hasSelector", "@container": "@set", "@type": "@id"},
    }
}

# Reader warnings that are not problems of the document:
_NOT_PROBLEMS = (
    # SHOULD-level advice (description, format, @id on annotations...)
    re.compile(r"should have '[^']+' set"),
    # lxml's HTML parser wraps every fragment in <html><body>, so each HTML value gets these
    re.compile(r"^Risky HTML tag '(html|body)' in "),
    # 2.1 allows rendering on every resource; iiif-prezi 0.3.0 lists it only for its 2.0 check
    re.compile(r"^Setting non-standard field 'rendering' on "),
)


def _context_21() -> Node:
    import iiif_prezi  # type: ignore[import-untyped]

    path = Path(iiif_prezi.__file__).parent / "contexts" / "context_21.json"
    context: Node = json.loads(path.read_text(encoding="utf-8"))
    return context


def _offline_loader(url: str, options: Any = None) -> Node:
    """A PyLD document loader with the contexts 2.1 documents name, and nothing else."""
    documents: dict[str, Callable[[], Node]] = {
        CONTEXT_2: _context_21,
        IMAGE_CONTEXT_2: lambda: _IMAGE_2_CONTEXT,
        SEARCH_CONTEXT_1: lambda: _SEARCH_1_CONTEXT,
        AUTH_CONTEXT_1: lambda: _AUTH_1_CONTEXT,
        AUTH_CONTEXT_2: lambda: _AUTH_2_CONTEXT,
    }
    if url not in documents:
        raise ValueError(f"no local context document for {url} (tests fetch nothing)")
    return {
        "contentType": "application/ld+json",
        "contextUrl": None,
        "documentUrl": url,
        "document": documents[url](),
    }


@contextmanager
def _offline_contexts() -> Iterator[None]:
    # iiif-prezi sets PyLD's default loader on import to a one-argument function that PyLD 2+
    # cannot call; the official validator replaces it with a network loader, this one with
    # the local documents above.
    from pyld import jsonld  # type: ignore[import-untyped]

    before = jsonld.get_document_loader()
    jsonld.set_document_loader(_offline_loader)
    try:
        yield
    finally:
        jsonld.set_document_loader(before)


def check_v2(doc: Node) -> list[str]:
    """Every problem iiif-prezi's 2.1 reader finds in a Manifest or Collection; [] when valid.

    The reader stops at the first error it raises (a missing label or height, an unknown
    ``@type``, a non-integer dimension, a bad viewingDirection, unsafe HTML, a context it
    cannot load...); its warnings (non-standard fields, unknown viewingHint...) are problems
    too, except the ones in ``_NOT_PROBLEMS``. Two checks the reader does not make are added:
    the top-level ``@type`` and the navDate form the 2.1 spec gives.
    """
    from iiif_prezi.loader import ManifestReader  # type: ignore[import-untyped]

    problems: list[str] = []
    if doc.get("@type") not in ("sc:Manifest", "sc:Collection"):
        problems.append(f"@type: must be sc:Manifest or sc:Collection, got {doc.get('@type')!r}")
    nav_date = doc.get("navDate")
    if nav_date is not None and not (
        isinstance(nav_date, str) and re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", nav_date)
    ):
        problems.append(f"navDate: must be YYYY-MM-DDThh:mm:ssZ, got {nav_date!r}")
    reader = ManifestReader(json.dumps(doc, indent=2), version="2.1")
    with _offline_contexts():
        try:
            resource = reader.read()
            resource.toJSON()
        except Exception as exc:  # the reader's errors have no common base (KeyError too)
            problems.append(f"{type(exc).__name__}: {exc}")
    for line in reader.get_warnings():
        warning = line.strip().removeprefix("WARNING: ")
        if not any(pattern.search(warning) for pattern in _NOT_PROBLEMS):
            problems.append(f"warning: {warning}")
    return problems
