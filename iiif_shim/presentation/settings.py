"""The ``presentation:`` section of the config: language, provider, object sources, the sizes
of what manifests offer (thumbnails, PDF pages) and the bounds of PDFs (pages, how many are
built at once, how long one waits for its turn, the disk they are kept on), strict or lenient
reading of catalogues and how often the sources are read for health. Each source's own keys
belong to its type (``sources/``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from iiif_shim.base.schema import at_least, between, option
from iiif_shim.presentation.sources.settings import SourceSettings

_LANGUAGE_RE = re.compile(r"none|[a-zA-Z]{2,8}(-[a-zA-Z0-9]{1,8})*")


def _language(value: str) -> str | None:
    if _LANGUAGE_RE.fullmatch(value):
        return None
    return "must be `none` or a BCP 47 language tag such as en, de or zh-Hant"


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.hostname:
        return "must be an http:// or https:// URL"
    return None


@dataclass(frozen=True)
class ProviderSettings:
    label: str = option(doc="the institution's name")
    homepage: str | None = option(None, doc="its web site", check=_http_url)
    logo: str | None = option(None, doc="URL of its logo (an image)", check=_http_url)


@dataclass(frozen=True)
class PresentationSettings:
    language: str = option(
        "none",
        doc="language of labels and values (`none`, or a BCP 47 tag such as `en`)",
        check=_language,
    )
    provider: ProviderSettings | None = option(
        None, doc="the institution named in every manifest: `label` (required), `homepage`, `logo`"
    )
    required_statement_label: str = option(
        "Attribution", doc="label shown with an object's `required_statement`"
    )
    thumbnail_size: int = option(
        256, doc="thumbnails fit in a square of this many pixels", check=between(16, 2000)
    )
    record_ttl: float = option(
        300.0,
        doc="seconds an object record stays fresh (and the documents' `max-age`)",
        check=at_least(0),
    )
    record_entries: int = option(1000, doc="object records kept (LRU)", check=at_least(0))
    collection_limit: int = option(
        1000, doc="manifests listed in one source's collection", check=between(1, 100_000)
    )
    pdf_page_size: int = option(
        1500,
        doc="PDF pages: each image fits in a square of this many pixels",
        check=between(100, 6000),
    )
    pdf_max_pages: int = option(
        300,  # measured: docs/performance.md#pdfs
        doc="most pages of one PDF (more: 413); at the default, an ordinary book of JPEG masters "
        "is built, after a full `pdf_wait`, well inside `server.request_timeout`; masters that "
        "decode slowly (large PNG, uncompressed TIFF) need fewer: see the *fits* column of "
        "[Performance](performance.md#pdfs)",
        check=between(1, 10_000),
    )
    pdf_concurrency: int = option(
        0,
        doc="PDFs each process builds at once (0: half its image threads, at least 1); the "
        "others wait in line for `pdf_wait` seconds, then get 503 with `Retry-After`",
        check=at_least(0),
    )
    pdf_wait: float = option(
        10.0,  # measured: docs/performance.md#pdfs (with pdf_max_pages, inside request_timeout)
        doc="seconds a PDF waits for its turn to be built (then 503 with `Retry-After`)",
        check=at_least(0),
    )
    pdf_cache_bytes: int = option(
        512 * 1024 * 1024,
        doc="bytes of built PDFs kept in `documents/` of the disk tier's folder (`cache.disk`), "
        "on top of `cache.disk_bytes`, until a purge of any of their images (0, or no disk "
        "tier: none kept); least recently used go first",
        check=at_least(0),
    )
    strict: bool = option(
        False,
        doc="refuse (502) an object with any value its catalogue gives that cannot be used (a "
        "date that is not one, rights that are not a URI, a bad URL, a row without its image); "
        "by default such a value is left out of the object's documents (logged once, listed by "
        "`check-config --sources`) and a row without its image is skipped",
    )
    check_interval: float = option(
        60.0,
        doc="seconds between the background reads of every object source, for `/health/ready` "
        "and the `iiif_shim_source_*` metrics (a local file is built again only when it changed)",
        check=at_least(1),
    )
    sources: Mapping[str, SourceSettings] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata={
            "doc": "object sources by name, each with its `type:` (see [Object "
            "sources](presentation.md#object-sources))",
            "check": None,
        },
    )
