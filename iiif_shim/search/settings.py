"""The ``search:`` section: where the index lives (a SQLite file under ``folder``, or a shared
PostgreSQL database), how large answers and OCR files may be, and how indexing on demand is
bounded. Which objects have text is said by their sources (``presentation.sources``: a
``text`` column, field or sidecar files); this section only says how their text is kept and
searched. Read once and frozen; ``search/`` builds its index and service from it.

A ``folder`` given is tried when the settings are read (:func:`_folder_problem`): the folders
missing made and a file made in it, then removed again, so that one the index could never be
kept in (under ``/proc``, a file in the way, read-only, another user's) is a problem of
``check-config`` and of the start, not a 503 at the first search. Only trying tells: root
passes every permission check, and ``/proc`` says it is writable."""

from __future__ import annotations

import contextlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from iiif_shim.base.schema import Finding, at_least, between, option, problem

_NAMESPACE = re.compile(r"[A-Za-z0-9._-]{1,64}")


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


def _namespace(value: str | None) -> str | None:
    if value is None or _NAMESPACE.fullmatch(value):
        return None
    return "must be 1 to 64 letters, digits, '.', '_' or '-'"


def _folder_problem(folder: Path) -> str | None:
    """Why the SQLite index could not be kept in ``folder``, found by trying: the folders
    missing are made and a file is made in it, then all of it is removed again."""
    missing: list[Path] = []
    made: list[Path] = []
    try:
        existing = folder
        while not existing.is_dir():
            if existing.exists() or existing == existing.parent:
                return f"{existing} is not a folder"
            missing.append(existing)
            existing = existing.parent
        for path in reversed(missing):
            path.mkdir()
            made.append(path)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".iiif-shim-check-"):
            pass
    except OSError as exc:
        done = "written in" if len(made) == len(missing) else "made"
        return f"{folder} cannot be {done} ({exc.strerror or exc})"
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
    return None


@dataclass(frozen=True)
class SearchSettings:
    folder: Path | None = option(
        None,
        doc="the folder of the SQLite index file (`index.sqlite`, relative to the config file; "
        "made if missing: one that cannot be made or written in is a problem); absent: "
        "`~/.cache/iiif-shim/search/` (`$XDG_CACHE_HOME/iiif-shim/search/` when set) and a "
        "name made from the config file's path, so the server and `iiif-shim index` with the "
        "same config share it",
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
    namespace: str | None = option(
        None,
        doc="the name this configuration's objects are kept under in the index (letters, "
        "digits, `.`, `_`, `-`); absent: one made from the config file's path. One index, one "
        "configuration: configurations given the same `folder` or `postgres` never see each "
        "other's objects unless they name the same namespace; machines sharing a PostgreSQL "
        "index share its objects only if their config files have the same path, or they name "
        "the same namespace",
        check=_namespace,
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
        doc="objects each process indexes at once, per place their text is read from (each "
        "text server, each source's files), when a search finds one not yet indexed (the "
        "others wait in that place's line; their files are parsed on this many threads)",
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
        if self.folder is not None and (why := _folder_problem(self.folder)) is not None:
            return [problem("folder", why)]
        return []
