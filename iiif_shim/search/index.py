"""The index seam: the one place an engine is chosen (:func:`open_index`: SQLite FTS5 in a
file, or PostgreSQL full-text when ``search.postgres`` is given), and the names every user of
an index imports from here (:class:`Index`, :class:`StoredPage`, :class:`IndexedObject`,
:class:`IndexUnavailable`, :class:`ObjectHead`, :class:`PackedPage`, defined in ``stored.py``,
below the engines)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from iiif_shim.search.settings import SearchSettings
from iiif_shim.search.sqlite import SqliteIndex
from iiif_shim.search.stored import (
    Index,
    IndexedObject,
    IndexUnavailable,
    ObjectHead,
    PackedPage,
    StoredPage,
)

__all__ = [
    "Index",
    "IndexUnavailable",
    "IndexedObject",
    "ObjectHead",
    "PackedPage",
    "StoredPage",
    "default_folder",
    "open_index",
    "sqlite_path",
]

FILE_NAME = "index.sqlite"  # in search.folder


def default_folder() -> Path:
    """Where SQLite indexes are kept when ``search.folder`` is not given: the user's cache
    folder (``$XDG_CACHE_HOME`` when it is an absolute path, else ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "iiif-shim" / "search"


def sqlite_path(settings: SearchSettings, origin: str) -> Path:
    """The SQLite index file of a configuration: ``index.sqlite`` in ``search.folder``, else
    one named after the configuration's origin (its file's path) in :func:`default_folder`, so
    that the server and ``iiif-shim index`` given the same file share it."""
    if settings.folder is not None:
        return settings.folder / FILE_NAME
    digest = hashlib.sha256(origin.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return default_folder() / f"{digest}.sqlite"


def open_index(settings: SearchSettings, origin: str) -> Index:
    """The index ``settings`` describe (``origin``: the configuration file's path,
    ``Settings.origin``): PostgreSQL when ``search.postgres`` is given, else SQLite at
    :func:`sqlite_path` (its folder made if missing). Nothing is read or written yet: the
    first call makes the tables (or rebuilds those of another schema version), and a database
    that does not answer then raises :class:`IndexUnavailable` as every call does. Raises
    :class:`IndexUnavailable` when the SQLite folder cannot be made, ImportError when
    ``search.postgres`` is given without the ``postgres`` extra (psycopg)."""
    if settings.postgres is not None:
        try:
            from iiif_shim.search.postgres import PostgresIndex  # psycopg: an optional extra
        except ImportError as exc:
            raise ImportError(
                "search.postgres needs the psycopg package: pip install 'iiif-shim[postgres]'"
            ) from exc
        return PostgresIndex(settings.postgres)
    try:
        path = sqlite_path(settings, origin)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the owner's alone (as made)
    except (OSError, RuntimeError) as exc:  # RuntimeError: no home folder to be found
        raise IndexUnavailable(
            "the search index (SQLite) cannot be made", detail=f"its folder: {exc}"
        ) from exc
    return SqliteIndex(path)
