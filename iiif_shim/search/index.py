"""The index seam: the one place an engine is chosen (:func:`open_index`: SQLite FTS5 in a
file, or PostgreSQL full-text when ``search.postgres`` is given), and the names every user of
an index imports from here (:class:`Index`, :class:`StoredPage`, :class:`IndexedObject`,
:class:`IndexUnavailable`, defined in ``stored.py``, below the engines)."""

from __future__ import annotations

from iiif_shim.search.stored import Index, IndexedObject, IndexUnavailable, StoredPage

__all__ = ["Index", "IndexUnavailable", "IndexedObject", "StoredPage"]
