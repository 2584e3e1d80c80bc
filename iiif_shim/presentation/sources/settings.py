"""What ``presentation.sources`` entries may say, one settings class per ``type:``
(:data:`SOURCE_SETTINGS`; each source module holds the behaviour), and what their checks may
look at across the configuration. Read by ``config/`` without loading any source: nothing here
talks to a catalogue. Nothing configured is ignored: an upstream key a type does not use, any
upstream key (credentials included) of a CSV read from a file, and credentials given both in a
URL and as ``username``/``password`` are problems.
"""

from __future__ import annotations

import builtins
import codecs
import dataclasses
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar
from urllib.parse import urlsplit

from iiif_shim.backends.settings import BackendSettings
from iiif_shim.base.schema import Finding, at_least, option, problem
from iiif_shim.core.routing import Router
from iiif_shim.presentation.labels import Label, label_check
from iiif_shim.presentation.records import OBJECT_FIELDS, check_name
from iiif_shim.upstream.jsonpath import path_check
from iiif_shim.upstream.settings import UpstreamSettings, credential_findings
from iiif_shim.upstream.urltemplate import UrlTemplate, fixed_url, url_template

_UPSTREAM_DEFAULTS = {f.name: f.default for f in dataclasses.fields(UpstreamSettings)}


def unused(settings: HttpSourceSettings) -> list[Finding]:
    """The upstream keys its type does not use (``unused_keys``), when set: refused, never
    silently ignored; and its credentials checked against its URLs
    (``upstream/settings.py``)."""
    found = [
        problem(name, "not used by this type of object source")
        for name in sorted(settings.unused_keys)
        if getattr(settings, name) != _UPSTREAM_DEFAULTS[name]
    ]
    return found + credential_findings(settings)


@dataclass(frozen=True)
class ConfigView:
    """What a source's config checks may look at: the other sections, already read."""

    backends: Mapping[str, BackendSettings]  # backend name -> its settings
    router: Router


class SourceSettings:
    """What every object source type's settings answer (a mixin of the settings dataclasses
    below; ``type_name`` is their ``type:``)."""

    type_name: ClassVar[str]

    def findings_in(self, config: ConfigView) -> list[Finding]:
        """Problems (and warnings) across sections, e.g. a backend it names that is missing;
        ``key`` is relative to the source's own section."""
        return []


@dataclass(frozen=True, kw_only=True)
class HttpSourceSettings(UpstreamSettings, SourceSettings):
    """The settings of every source that may read its metadata over HTTP; ``unused_keys`` are
    the upstream keys its type has no use for (setting one is refused)."""

    unused_keys: ClassVar[frozenset[str]] = frozenset()

    access: str | None = option(
        None,
        doc="the access policy (a name under `auth.policies`) of every object of this source "
        "without an `access` of its own: only its PDF, text and search need it, its images "
        "stay as public as their routes (give those `access`; check-config warns); absent: "
        "none",
    )


@dataclass(frozen=True)
class FolderSourceSettings(SourceSettings):
    type_name = "folder"
    type: str = option(doc="`folder`")
    backend: str = option(doc="a `files` backend; each of its sub-folders is an object")
    access: str | None = option(
        None,
        doc="the access policy (a name under `auth.policies`) of every object of this source "
        "without an `access` of its own: only its PDF, text and search need it, its images "
        "stay as public as their routes (give those `access`; check-config warns); absent: "
        "none",
    )

    def findings_in(self, config: ConfigView) -> list[Finding]:
        backend = config.backends.get(self.backend)
        if backend is None:
            return [problem("backend", f"no backend named {self.backend!r}")]
        if backend.type_name != "files":
            return [
                problem(
                    "backend",
                    f"backend {self.backend!r} is of type {backend.type_name!r}; a folder source "
                    "lists the sub-folders of a `files` backend",
                )
            ]
        if self.backend not in config.router.identity_backends():
            return [
                problem(
                    "backend",
                    f"no catch-all route passes identifiers unchanged (id: '{{id}}') to backend "
                    f"{self.backend!r}, so its files have no IIIF identifiers to show",
                )
            ]
        return []


_SCHEME_RE = re.compile(r"https?:", re.IGNORECASE)


def origins_check(value: tuple[str, ...]) -> str | None:
    """A settings check of ``text_origins``: http(s) URLs (an origin, or an origin and a
    folder), without a query or credentials."""
    for origin in value:
        if why := fixed_url(origin):
            return f"{origin[:80]!r} {why}"
        split = urlsplit(origin)
        if "@" in split.netloc:
            return f"{origin[:80]!r} holds credentials: none are sent to text_origins"
        if split.query or split.fragment:
            return f"{origin[:80]!r} has a query or a fragment: give an origin or a folder"
    return None


TEXT_ORIGINS_DOC = (
    "http(s) servers (`https://ocr.example.org`) or folders on them "
    "(`https://ocr.example.org/alto/`) its text URLs may name besides its own origin; a text "
    "URL elsewhere is refused (left out, and listed by check-config). The source's own "
    "client settings (timeout, retries, ...) apply, its credentials are not sent there"
)


# the columns a row may have, besides the metadata columns, in the order rows keep them
ROW_FIELDS = ("image", "canvas_label", "range", "order", "text", *OBJECT_FIELDS)


def _delimiter(value: str) -> str | None:
    if len(value) != 1 or value in '"\r\n':
        return "must be one character (not a quote or a line break), e.g. `,`, `;` or `\\t`"
    return None


def _encoding(value: str) -> str | None:
    try:
        codecs.lookup(value)
    except LookupError:
        return f"unknown encoding {value!r} (e.g. utf-8, cp1252, latin-1)"
    return None


LABEL_DOC = (
    "the label shown: text, or one per language (e.g. `{en: Date, fr: Date, de: Datum}`; "
    "the first is shown where none is in `presentation.language`)"
)


@dataclass(frozen=True)
class MetadataColumn:
    """A metadata column with its own label."""

    column: str = option(doc="the column's name in the header")
    label: str | Mapping[str, str] | None = option(
        None, doc=f"{LABEL_DOC}; else the column's name", check=label_check
    )


@dataclass(frozen=True)
class CsvColumns:
    """Which column holds what (each value a column name of the header)."""

    object: str = option(doc="the object's name (rows with the same name are its canvases)")
    image: str = option(doc="the canvas's image: a IIIF identifier of this server")
    label: str | None = option(None, doc="the object's label (else its name)")
    canvas_label: str | None = option(None, doc="the canvas's label")
    summary: str | None = option(None, doc="the object's summary")
    rights: str | None = option(None, doc="a Creative Commons or RightsStatements.org URI")
    required_statement: str | None = option(None, doc="attribution shown with the object")
    nav_date: str | None = option(None, doc="a year, date or date-time (ISO 8601)")
    order: str | None = option(None, doc="sorts the rows of an object (numbers, else natural)")
    range: str | None = option(None, doc="consecutive canvases with the same value form a range")
    text: str | None = option(
        None,
        doc="the canvas's text (OCR): a file's path relative to the CSV file's folder (never "
        "outside it), or an http(s) URL (a CSV read from a URL: a path is relative to that "
        "URL); ALTO (`.xml`, `.alto`), hOCR (`.hocr`, `.html`) or plain text (`.txt`; another "
        "name: told from its content)",
    )
    behavior: str | None = option(None, doc="manifest behaviors, e.g. `paged`")
    viewing_direction: str | None = option(None, doc="e.g. `right-to-left`")
    see_also: str | None = option(None, doc="http(s) URIs of other descriptions")
    access: str | None = option(
        None,
        doc="the object's access policy (a name under `auth.policies`; else the source's `access`)",
    )
    metadata: tuple[str | MetadataColumn, ...] = option(
        (),
        doc="columns shown as metadata, in this order: a column's name (its label too), or "
        "`{column: extent, label: Dimensions}`",
    )

    def labelled(self) -> list[tuple[Label, str]]:
        """(label, column) of each metadata column, in order."""
        return [
            (entry, entry)
            if isinstance(entry, str)
            else (entry.label or entry.column, entry.column)
            for entry in self.metadata
        ]

    def wanted(self) -> list[str | None]:
        """The column of each of ROW_FIELDS, then the metadata columns."""
        columns: list[str | None] = [getattr(self, key) for key in ROW_FIELDS]
        return columns + [column for _, column in self.labelled()]

    def named(self) -> list[tuple[str, str]]:
        """(setting, column) of every configured column."""
        found = [(key, col) for key in ("object", *ROW_FIELDS) if (col := getattr(self, key))]
        return found + [(f"metadata[{i}]", col) for i, (_, col) in enumerate(self.labelled())]


@dataclass(frozen=True, kw_only=True)
class CsvSourceSettings(HttpSourceSettings):
    type_name = "csv"
    unused_keys = frozenset({"max_connections_per_image", "retries", "max_metadata_bytes"})
    type: str = option(doc="`csv`")
    path: Path = option(
        doc="the CSV file (relative to the config file), or an http(s) URL it is fetched from"
    )
    columns: CsvColumns = option(doc="column names by field: `object` and `image` required")
    delimiter: str = option(",", doc="the field separator", check=_delimiter)
    encoding: str = option(
        "utf-8", doc="the file's text encoding (UTF-8 may start with a BOM)", check=_encoding
    )
    max_bytes: int = option(
        16 * 1024 * 1024,
        doc="largest CSV it reads (a file, or a URL's answer); the parsed table stays in "
        "memory, about 6 times the file's size (measured: a 20 MB file keeps 120 MB, 220 MB "
        "while parsing)",
        check=at_least(1),
    )
    max_rows: int = option(1_000_000, doc="most rows it reads (more: 502)", check=at_least(1))
    refresh: float = option(
        300.0,
        doc="a URL: seconds a fetched copy is used before it is fetched again",
        check=at_least(0),
    )
    text_origins: tuple[str, ...] = option(
        (),
        doc=f"{TEXT_ORIGINS_DOC}. A CSV read from a file fetches text URLs only from these",
        check=origins_check,
    )

    @property
    def url(self) -> str | None:
        """The http(s) URL ``path`` names, or None for a file. (Settings read a ``path`` as a
        file relative to the config's folder, which folds a URL's ``//``: undone here.)"""
        parts = self.path.parts
        for i, part in enumerate(parts):
            if _SCHEME_RE.fullmatch(part):
                return f"{part.lower()}//" + "/".join(parts[i + 1 :])
        return None

    def findings(self) -> list[Finding]:
        url = self.url
        if url is None:  # a file: what is for reading over HTTP is refused, never ignored
            return [
                problem(name, "is for a CSV read over HTTP; path names a file here")
                for name in _UPSTREAM_DEFAULTS
                if name != "max_bytes" and getattr(self, name) != _UPSTREAM_DEFAULTS[name]
            ]
        found = unused(self)
        if why := fixed_url(url):
            found.append(problem("path", why))
        else:
            found += credential_findings(self, [("path", url)])
        return found


def _optional_url(value: str | None) -> str | None:
    return None if value is None else fixed_url(value)


@dataclass(frozen=True)
class MetadataPath:
    """A metadata path with its own label (the entry's key is then only its name)."""

    path: str = option(doc="a JSON path, e.g. `$.date`", check=path_check)
    label: str | Mapping[str, str] | None = option(
        None, doc=f"{LABEL_DOC}; else the entry's key", check=label_check
    )


@dataclass(frozen=True)
class JsonFields:
    """JSON paths into an object's answer."""

    images: str = option(
        doc="the image identifiers (IIIF identifiers of this server), one canvas each, e.g. "
        "`$.files[*].iiif_id`",
        check=path_check,
    )
    canvas_labels: str | None = option(
        None,
        doc='one label per image, in the same order, e.g. `$.files[*].title` (`null` or `""`: '
        "none); matches that are not one per image (an image without the key) cannot be "
        "paired: none is used, and that is said",
        check=path_check,
    )
    text: str | None = option(
        None,
        doc="one text (OCR) URL per image, in the same order, e.g. `$.files[*].alto`: "
        "absolute, or relative to the object's JSON URL; ALTO, hOCR or plain text (told by "
        "the name's extension, else by the content)",
        check=path_check,
    )
    label: str | None = option(None, doc="the object's label (else its name)", check=path_check)
    summary: str | None = option(None, doc="the object's summary", check=path_check)
    rights: str | None = option(
        None, doc="a Creative Commons or RightsStatements.org URI", check=path_check
    )
    required_statement: str | None = option(
        None, doc="attribution shown with the object", check=path_check
    )
    nav_date: str | None = option(
        None, doc="a year, date or date-time (ISO 8601)", check=path_check
    )
    behavior: str | None = option(None, doc="manifest behaviors, e.g. `paged`", check=path_check)
    viewing_direction: str | None = option(None, doc="e.g. `right-to-left`", check=path_check)
    see_also: str | None = option(None, doc="http(s) URIs of other descriptions", check=path_check)
    access: str | None = option(
        None,
        doc="the object's access policy (a name under `auth.policies`; else the source's `access`)",
        check=path_check,
    )
    metadata: Mapping[str, str | MetadataPath] = option(
        MappingProxyType({}),
        doc="label -> path (or `{path: ..., label: ...}`), shown in this order; several "
        "matches joined with `; `",
    )

    def labelled(self) -> list[tuple[Label, str]]:
        """(label, path) of each metadata entry, in order."""
        return [_labelled(key, entry, entry if isinstance(entry, str) else entry.path)
                for key, entry in self.metadata.items()]  # fmt: skip

    def findings(self) -> list[Finding]:
        return [
            problem(f"metadata.{label}", why)
            for label, path in self.metadata.items()
            if isinstance(path, str) and (why := path_check(path))
        ]


def _labelled(key: str, entry: object, value: str) -> tuple[Label, str]:
    """(label, value) of a metadata mapping's entry: its own label, else its key."""
    label: Label | None = getattr(entry, "label", None)
    return (label or key, value)


@dataclass(frozen=True, kw_only=True)
class JsonSourceSettings(HttpSourceSettings):
    type_name = "json"
    unused_keys = frozenset({"max_bytes"})
    type: str = option(doc="`json`")
    url: str = option(
        doc="URL template of one object's JSON, with `{object}` (encoded as one segment, "
        "contained like backend templates), e.g. "
        "`http://cat.example.org/api/items/{object}`",
        check=url_template,
    )
    list: str | None = option(
        None, doc="URL of a JSON list of the objects (or give `objects`)", check=_optional_url
    )
    objects: tuple[str, ...] | None = option(None, doc="the object names (or give `list`)")
    list_path: str = option(
        "$[*]", doc="the entries of the `list` answer, e.g. `$.items[*]`", check=path_check
    )
    name_path: str | None = option(
        None, doc="where an entry that is an object has its name, e.g. `$.id`", check=path_check
    )
    fields: JsonFields = option(doc="JSON paths by field: `images` required")
    refresh: float = option(
        300.0,
        doc="seconds a fetched `list` is used before it is fetched again",
        check=at_least(0),
    )
    text_origins: tuple[str, ...] = option((), doc=TEXT_ORIGINS_DOC, check=origins_check)

    def findings(self) -> builtins.list[Finding]:  # `list` is a setting here
        found: builtins.list[Finding] = unused(self)
        if UrlTemplate.parse(self.url).placeholders != {"object"}:
            found.append(problem("url", "needs `{object}` and no other placeholder"))
        if self.list is not None and self.objects is not None:
            found.append(problem("list", "give `list` or `objects`, not both"))
        if self.name_path is not None and self.list is None:
            found.append(problem("name_path", "only used with `list`"))
        for i, name in enumerate(self.objects or ()):
            if (why := check_name(name)) is not None:
                found.append(problem(f"objects[{i}]", why))
        return found


_ALIAS_RE = re.compile(r"/?[A-Za-z0-9_-]{1,64}")
_NICK_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
_API_PATH_RE = re.compile(r"(/[A-Za-z0-9._~-]+)+")
DEFAULT_METADATA = {
    "Creator": "creato",
    "Date": "date",
    "Subject": "subjec",
    "Publisher": "publis",
    "Type": "type",
    "Format": "format",
    "Identifier": "identi",
    "Language": "langua",
}


def _nick(value: str | None) -> str | None:
    if value is None or _NICK_RE.fullmatch(value):
        return None
    return "must be a CONTENTdm field nickname, e.g. `title` or `descri`"


def _alias(value: str) -> str | None:
    if _ALIAS_RE.fullmatch(value):
        return None
    return "must be a collection alias: letters, digits, `_` and `-`, e.g. `p16808coll5`"


def _api_path(value: str) -> str | None:
    if _API_PATH_RE.fullmatch(value):
        return None
    return "must be a path such as `/dmwebservices/index.php`"


def _base_url(value: str) -> str | None:
    if problem := fixed_url(value):
        return problem
    if "?" in value:
        return "is the server's address, without a query"
    return None


def _image_id(value: str) -> str | None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        return f"bad template: {exc}"
    if "pointer" not in names or not names <= {"alias", "pointer"}:
        return "takes `{pointer}` and optionally `{alias}`, e.g. `{alias}:{pointer}`"
    return None


@dataclass(frozen=True)
class MetadataNick:
    """A metadata field with its own label (the entry's key is then only its name)."""

    field: str = option(doc="the field's nickname", check=_nick)
    label: str | Mapping[str, str] | None = option(
        None, doc=f"{LABEL_DOC}; else the entry's key", check=label_check
    )


@dataclass(frozen=True)
class ContentdmFields:
    """CONTENTdm field nicknames for the object's fields (null: not used)."""

    label: str | None = option("title", doc="the object's label", check=_nick)
    summary: str | None = option("descri", doc="the object's summary", check=_nick)
    rights: str | None = option(
        "rights",
        doc="a rights URI (other text is shown as metadata `Rights`)",
        check=_nick,
    )
    required_statement: str | None = option(None, doc="attribution", check=_nick)
    nav_date: str | None = option("date", doc="the object's date (when ISO 8601)", check=_nick)
    behavior: str | None = option(None, doc="manifest behaviors", check=_nick)
    viewing_direction: str | None = option(None, doc="e.g. `right-to-left`", check=_nick)
    see_also: str | None = option(None, doc="http(s) URIs of other descriptions", check=_nick)
    access: str | None = option(
        None,
        doc="the object's access policy (a name under `auth.policies`; else the source's `access`)",
        check=_nick,
    )
    text: str | None = option(
        None,
        doc="the field holding each page's full text (CONTENTdm's full-text field, e.g. "
        "`full`), read per page with dmGetItemInfo as plain text; absent: no text",
        check=_nick,
    )
    metadata: Mapping[str, str | MetadataNick] = option(
        MappingProxyType(DEFAULT_METADATA),
        doc="label -> field nickname (or `{field: ..., label: ...}`), in this order (default: "
        "Creator, Date, Subject, Publisher, Type, Format, Identifier, Language)",
    )

    def labelled(self) -> list[tuple[Label, str]]:
        """(label, nickname) of each metadata entry, in order."""
        return [_labelled(key, entry, entry if isinstance(entry, str) else entry.field)
                for key, entry in self.metadata.items()]  # fmt: skip

    def findings(self) -> list[Finding]:
        return [
            problem(f"metadata.{label}", why)
            for label, nick in self.metadata.items()
            if isinstance(nick, str) and (why := _nick(nick))
        ]


@dataclass(frozen=True, kw_only=True)
class ContentdmSourceSettings(HttpSourceSettings):
    type_name = "contentdm"
    unused_keys = frozenset({"max_bytes"})
    type: str = option(doc="`contentdm`")
    url: str = option(
        doc="the CONTENTdm server's address, e.g. `https://cdm.example.org`", check=_base_url
    )
    api_path: str = option(
        "/dmwebservices/index.php",
        doc="path of its web services (`/digital/bl/dmwebservices/index.php` on OCLC-hosted sites)",
        check=_api_path,
    )
    collection: str = option(doc="the collection's alias", check=_alias)
    fields: ContentdmFields = option(
        ContentdmFields(), doc="field nicknames: `label`, `summary`, ..., `metadata`"
    )
    image_id: str = option(
        "{alias}:{pointer}",
        doc="the IIIF identifier of each page (as `config/contentdm.yaml` routes it)",
        check=_image_id,
    )

    def findings(self) -> list[Finding]:
        return unused(self)

    @property
    def alias(self) -> str:
        return self.collection.lstrip("/")


SOURCE_SETTINGS: Mapping[str, type[SourceSettings]] = MappingProxyType(
    {
        cls.type_name: cls
        for cls in (
            FolderSourceSettings,
            CsvSourceSettings,
            JsonSourceSettings,
            ContentdmSourceSettings,
        )
    }
)
