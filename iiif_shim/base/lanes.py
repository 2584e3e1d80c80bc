"""The kind of request being served, its lane: what admission bounds each kind by on its own,
in the thread pool (``imaging/pool.py``: jobs per lane) and at each backend
(``upstream/client.py``: facts asked for documents hold at most a share of the connections).

The handlers set it (:func:`in_lane`); the tasks a request starts inherit it.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from contextvars import ContextVar


class Lane(enum.Enum):
    """The kind of request: ``images`` (the Image API; the default), ``documents`` (manifests,
    collections and object pages: records and image facts) and ``pdfs`` (the pages of PDFs)."""

    IMAGES = "images"
    DOCUMENTS = "documents"
    PDFS = "pdfs"


# The lane of the request being served (tasks started from it inherit it).
lane: ContextVar[Lane] = ContextVar("lane", default=Lane.IMAGES)


@contextlib.contextmanager
def in_lane(kind: Lane) -> Iterator[None]:
    """Count what is started inside the block (and by the tasks it starts) in ``kind``."""
    token = lane.set(kind)
    try:
        yield
    finally:
        lane.reset(token)
