"""The index seam: the one place an engine is chosen (:func:`open_index`: SQLite FTS5 in a
file, or PostgreSQL full-text when ``search.postgres`` is given), and the names every user of
an index imports from here (:class:`Index`, :class:`StoredPage`, :class:`IndexedObject`,
:class:`IndexUnavailable`, :class:`ObjectHead`, :class:`PackedPage`, defined in ``stored.py``,
below the engines).

One index, one configuration: the index opened is seen through the configuration's namespace
(:class:`Namespaced`: ``search.namespace``, by default made from the configuration file's
path): each object is kept as ``namespace/name``, and only the objects of that namespace are
listed, so two configurations given one folder or one database (staging and production, two
institutions on one host) never read, rebuild or drop each other's objects."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iiif_shim.model.text import Query
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
    "Namespaced",
    "ObjectHead",
    "PackedPage",
    "StoredPage",
    "default_folder",
    "namespace_of",
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


def namespace_of(settings: SearchSettings, origin: str) -> str:
    """The namespace of a configuration's objects in the index: ``search.namespace``, else
    made from the configuration file's path (``origin``), so that machines given the same file
    at the same path share one PostgreSQL database's objects."""
    if settings.namespace is not None:
        return settings.namespace
    return hashlib.sha256(origin.encode("utf-8", "surrogatepass")).hexdigest()[:12]


class Namespaced:
    """``index`` seen through ``namespace``: every object name given is kept as
    ``namespace/name``; :meth:`objects` lists those of the namespace alone, without it."""

    def __init__(self, index: Index, namespace: str) -> None:
        self.index = index
        self.namespace = namespace
        self._prefix = f"{namespace}/"

    def _key(self, obj: str) -> str:
        return self._prefix + obj

    def state(self, obj: str) -> IndexedObject | None:
        return self.index.state(self._key(obj))

    def store(
        self,
        obj: str,
        signature: str,
        pages: Sequence[StoredPage],
        removed: Sequence[int] = (),
        checked: float | None = None,
    ) -> None:
        self.index.store(self._key(obj), signature, pages, removed, checked)

    def touch(self, obj: str, checked: float | None = None) -> None:
        self.index.touch(self._key(obj), checked)

    def drop(self, obj: str) -> None:
        self.index.drop(self._key(obj))

    def head(self, obj: str) -> ObjectHead | None:
        return self.index.head(self._key(obj))

    def packed(
        self, obj: str, canvases: Sequence[int] | None = None
    ) -> tuple[int, list[PackedPage]]:
        return self.index.packed(self._key(obj), canvases)

    def matching(self, obj: str, query: Query) -> list[int]:
        return self.index.matching(self._key(obj), query)

    def pages(self, obj: str, canvases: Sequence[int]) -> list[StoredPage]:
        return self.index.pages(self._key(obj), canvases)

    def terms(self, obj: str, *args: Any, **kwargs: Any) -> Any:
        return self.index.terms(self._key(obj), *args, **kwargs)

    def objects(self) -> list[str]:
        n = len(self._prefix)
        return [o[n:] for o in self.index.objects() if o.startswith(self._prefix)]

    def size(self) -> int:
        return self.index.size()

    def close(self) -> None:
        self.index.close()


def open_index(settings: SearchSettings, origin: str) -> Index:
    """The index ``settings`` describe (``origin``: the configuration file's path,
    ``Settings.origin``): PostgreSQL when ``search.postgres`` is given, else SQLite at
    :func:`sqlite_path` (its folder made if missing). Nothing is read or written yet: the
    first call makes the tables (or rebuilds those of another schema version), and a database
    that does not answer then raises :class:`IndexUnavailable` as every call does. Seen
    through the configuration's namespace (:func:`namespace_of`, :class:`Namespaced`). Raises
    :class:`IndexUnavailable` when the SQLite folder cannot be made, ImportError when
    ``search.postgres`` is given without the ``postgres`` extra (psycopg)."""
    if settings.postgres is not None:
        try:
            from iiif_shim.search.postgres import PostgresIndex  # psycopg: an optional extra
        except ImportError as exc:
            raise ImportError(
                "search.postgres needs the psycopg package: pip install 'iiif-shim[postgres]'"
            ) from exc
        return Namespaced(PostgresIndex(settings.postgres), namespace_of(settings, origin))
    try:
        path = sqlite_path(settings, origin)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the owner's alone (as made)
    except (OSError, RuntimeError) as exc:  # RuntimeError: no home folder to be found
        raise IndexUnavailable(
            "the search index (SQLite) cannot be made", detail=f"its folder: {exc}"
        ) from exc
    return Namespaced(SqliteIndex(path), namespace_of(settings, origin))
