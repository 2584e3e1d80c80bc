"""The ``search:`` section: where the index lives (a SQLite file under ``folder``, or a shared
PostgreSQL database), how large answers and OCR files may be, and how indexing on demand is
bounded. Which objects have text is said by their sources (``presentation.sources``: a
``text`` column, field or sidecar files); this section only says how their text is kept and
searched. Read once and frozen; ``search/`` builds its index and service from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from iiif_shim.base.schema import Finding, at_least, between, option, problem


def _dsn(value: str | None) -> str | None:
    """Why ``value`` is not a PostgreSQL URL (never echoing it: it holds a password)."""
    if value is None:
        return None
    try:
        split = urlsplit(value)
        split.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return "is not a valid URL (e.g. a bracket or a port out of place)"
    if split.scheme not in ("postgresql", "postgres"):
        return "must be a PostgreSQL URL, e.g. postgresql://user:password@db.example.org/iiif"
    return None


@dataclass(frozen=True)
class SearchSettings:
    folder: Path | None = option(
        None,
        doc="the folder of the SQLite index file (`index.sqlite`, relative to the config file); "
        "absent: `~/.cache/iiif-shim/search/` and a name made from the config file's path, so "
        "the server and `iiif-shim index` with the same config share it",
    )
    postgres: str | None = option(
        None,
        doc="a PostgreSQL URL (`postgresql://user:password@host/db`): the index is kept there "
        "instead of SQLite, shared by every machine given the same URL (its tables, prefixed "
        "`iiif_search_`, are made on first use: the role needs to be allowed to create tables "
        "there; and the `postgres` extra)",
        check=_dsn,
        secret=True,
    )
    page_size: int = option(
        50, doc="hits in one page of search results (then `next`)", check=between(1, 1000)
    )
    terms: int = option(20, doc="terms in one autocomplete answer, at most", check=between(1, 1000))
    max_text_bytes: int = option(
        32 * 1024 * 1024,
        doc="largest OCR file read (ALTO, hOCR or plain text; larger: refused, and named in "
        "the log and by `iiif-shim index`)",
        check=at_least(1024),
    )
    max_words: int = option(
        100_000,
        doc="most words one page's OCR may hold (a word of more than 200 characters is read as "
        "words of at most 200, each counted; more: the file is refused)",
        check=at_least(1),
    )
    build_concurrency: int = option(
        1,
        doc="objects each process indexes at once when a search finds one not yet indexed "
        "(the others wait in line for `build_wait` seconds)",
        check=between(1, 64),
    )
    build_wait: float = option(
        20.0,
        doc="seconds a search waits for its object to be indexed on demand (then 503 with "
        "`Retry-After`; the indexing goes on)",
        check=at_least(0),
    )
    recheck: float = option(
        300.0,
        doc="seconds an object's index is used before its text files are looked at again "
        "(size, time, ETag: only changed pages are read again); 0: every search",
        check=at_least(0),
    )

    def findings(self) -> list[Finding]:
        if self.postgres is not None and self.folder is not None:
            return [problem("folder", "is for the SQLite index; `postgres` is given")]
        return []
