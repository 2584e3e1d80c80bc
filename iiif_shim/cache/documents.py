"""Built documents (the PDFs of objects) kept in the disk tier's folder, each valid only while
none of the sources it was made from has been purged.

Layout, under the disk tier's folder (``cache.disk``, see ``disk.py``)::

    <root>/documents/<key>/<token>.pdf     a document, as one build made it
    <root>/documents/<key>/<token>.json    what it was made from: its sources, its pages' digest
    <root>/documents/.tmp-...              a document being built, or a reader's link to one
    <root>/<source>/.document-<key>        marker: the token of the last build of <key> that
                                           used <source>

``<key>`` names what a document is of (its object, as its caller says: 32 hex digits), each
``<source>`` is an image's source key in the disk tier (``entry.source_key``), the token is
random per build. A build first writes its token into the marker in the folder of each of its
sources (:meth:`DocumentFolder.begin`), then renders, then keeps the document under that
token (:meth:`DocumentFolder.keep`). A purge of a source empties and removes its folder, the
marker with it; a purge of everything removes every source folder. A document is found
(:meth:`DocumentFolder.find`) only while the marker of every one of its sources still holds its
token, so once any of its images was purged (in any process, by the purge endpoint or the
command, whose purge of a source knows nothing of documents) it is a miss, and it is removed
when next seen. A later build of the same key takes the markers over, so an older document
never counts as valid again, and a build whose markers were taken over (by a later build in
any process, or by a purge) keeps nothing and removes nothing when it ends: builds are
single-flight per process only, and the last to end must not remove the one valid document.

LRU within ``max_bytes`` (``presentation.pdf_cache_bytes``): a hit touches the document's
description (``.json``), never the PDF (whose time is its ``Last-Modified`` and ``ETag``), and
each document kept is followed by an eviction of the least recently used (with their markers)
down to 90% of the budget; a document larger than a quarter of the budget is not kept. A
reader gets a link of its own to the document (``.tmp-...``, removed once sent), so a document
removed meanwhile by any process is not taken from under it. A purge of everything also
removes every document (:meth:`DocumentFolder.clear`), in the process that performs it
(``Caches.purge``), to free their space: they are invalid already, their markers gone with the
source folders. Nothing is followed through a link: folders are opened with ``O_NOFOLLOW`` and
markers read and written through them, a document is served only if it and its folders are no
links. :class:`DocumentStore` runs the folder's blocking methods off the event loop; a failing
disk is a miss or a document not kept, logged once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, TypeVar

from iiif_shim.base.files import FOLDER, READ
from iiif_shim.cache.entry import valid_source
from iiif_shim.cache.folder import (
    LOW_WATER,
    STALE_TMP,
    TMP,
    TOUCH_AFTER,
    OffLoop,
    opened,
    scratch_name,
    write_in,
)

log = logging.getLogger("iiif_shim")
T = TypeVar("T")

DOCUMENTS = "documents"
MARKER = ".document-"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_MAX_META = 1024 * 1024  # bytes of one document's description (2000 pages take about 70 KB)


@dataclass(frozen=True)
class Kept:
    """A document in the folder: its file and its size in bytes."""

    path: Path
    size: int


@dataclass(frozen=True)
class _Meta:
    sources: tuple[str, ...]
    pages: str


class DocumentFolder:
    """The blocking side: ``root`` is the disk tier's folder."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.folder = root / DOCUMENTS
        self.max_bytes = max_bytes
        self.max_document = max_bytes // 4

    # --- what callers ask ------------------------------------------------------------------

    def find(self, key: str, pages: str | None = None, claim: bool = False) -> Kept | None:
        """The valid document of ``key`` (and, when ``pages`` is given, of those pages), its
        use recorded for the LRU; ``None`` when there is none. A document one of whose sources
        was purged is removed. With ``claim``, the path is the caller's own link to it (to
        remove once sent), so the document can go meanwhile (evicted, superseded, cleared, by
        any process) without taking it from under its reader."""
        place = self._key_folder(key)
        if place is None:
            return None
        for _, token, size in sorted(self._documents_in(place), reverse=True):
            meta = self._meta(place / f"{token}.json")
            if meta is None or not self._marked(key, token, meta.sources):
                self._remove(place, token)  # purged, superseded, or torn
                continue
            if pages is not None and meta.pages != pages:
                continue  # made from other versions of its images: not this one
            path = place / f"{token}.pdf"
            with contextlib.suppress(OSError):  # on the description: the PDF's own time is
                used = place / f"{token}.json"  # its validators (ETag, Last-Modified)
                if time.time() - _mtime(used) > TOUCH_AFTER:
                    os.utime(used, follow_symlinks=False)
            if not claim:
                return Kept(path, size)
            link = self.folder / scratch_name(".pdf")
            try:
                os.link(path, link, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since it was looked at
            return Kept(link, size)
        return None

    def begin(self, key: str, sources: Iterable[str]) -> str:
        """A new build of ``key`` from ``sources``: its token, now in each source's marker."""
        _check_key(key)
        token = secrets.token_hex(16)
        for source in sorted(set(sources)):
            if not valid_source(source):
                raise ValueError("not a source key")
            folder = self._open_source(source)
            try:
                write_in(folder, MARKER + key, token.encode("ascii"))
            finally:
                os.close(folder)
        return token

    def scratch(self) -> Path:
        """A new file name in the folder for a document being built (renamed by :meth:`keep`)."""
        self._make_folder()
        return self.folder / scratch_name(".pdf")

    def keep(
        self, key: str, token: str, built: Path, sources: Sequence[str], pages: str
    ) -> Kept | None:
        """Keep the document ``built`` (a :meth:`scratch` file, still the caller's afterwards:
        the document is a link to it) as the build ``token`` of ``key``; ``None`` when it is
        too large to keep, or when the
        markers no longer hold ``token`` (a later build of ``key`` began, in this process or
        another, or one of its sources was purged): such a build keeps nothing and removes
        nothing. Older documents of ``key`` go, and the oldest of all while the budget is
        exceeded."""
        _check_key(key)
        if not _HEX32.fullmatch(token):
            raise ValueError("not a build token")
        size = os.stat(built, follow_symlinks=False).st_size
        if size > self.max_document or not self._marked(key, token, sources):
            return None
        place = self._make_key_folder(key)
        meta = json.dumps({"sources": list(sources), "pages": pages}).encode()
        with opened(place) as fd:
            write_in(fd, f"{token}.json", meta)
        path = place / f"{token}.pdf"
        os.link(built, path, follow_symlinks=False)
        for _, older, _ in self._documents_in(place):
            if older != token and not self._valid(key, place, older):
                self._remove(place, older)  # (a build that began since ours stays)
        self.evict()
        return Kept(path, size)

    def unmark(self, key: str, token: str, sources: Iterable[str]) -> None:
        """Remove the markers of the build ``token`` of ``key`` that still hold it (a build
        that failed, was abandoned or kept nothing: they would keep its source folders)."""
        _check_key(key)
        want = token.encode("ascii")
        for source in set(sources):
            if not valid_source(source):
                continue
            with contextlib.suppress(OSError), opened(self.root / source) as folder:
                if _holds(folder, key, want):
                    os.unlink(MARKER + key, dir_fd=folder)

    def clear(self) -> None:
        """Remove every document (a purge of everything has removed every marker already)."""
        try:
            fd = os.open(self.folder, FOLDER)
        except OSError:
            with contextlib.suppress(OSError):  # a link or file in its place: the name goes
                if not S_ISDIR(os.lstat(self.folder).st_mode):
                    os.unlink(self.folder)
            return
        try:
            with os.scandir(fd) as scan:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in scan]
            for name, is_folder in names:
                if name.startswith(TMP):  # a build's: renamed into place by it, or stale later
                    continue
                with contextlib.suppress(OSError):
                    if is_folder:
                        shutil.rmtree(name, dir_fd=fd)
                    else:
                        os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def size(self) -> int:
        """Bytes the kept documents take (a scan)."""
        return sum(size for _, _, _, size in self._all())

    def evict(self) -> int:
        """Remove the least recently used documents (and their markers) until at most 90% of
        the budget is used, if it is exceeded; how many went. Stale scratch files go too."""
        found = sorted(self._all())
        total = sum(size for _, _, _, size in found)
        removed = 0
        if total <= self.max_bytes:
            return 0
        for _, place, token, size in found:
            if total <= self.max_bytes * LOW_WATER:
                break
            self._remove(place, token)
            total -= size
            removed += 1
        return removed

    # --- inside ----------------------------------------------------------------------------

    def _key_folder(self, key: str) -> Path | None:
        """The folder of ``key`` if it is one (never a link), else None."""
        _check_key(key)
        place = self.folder / key
        for path in (self.folder, place):
            try:
                if not S_ISDIR(os.lstat(path).st_mode):
                    return None
            except OSError:
                return None
        return place

    def _make_folder(self) -> None:
        _make_dir(self.folder)

    def _make_key_folder(self, key: str) -> Path:
        self._make_folder()
        place = self.folder / key
        _make_dir(place)
        return place

    def _documents_in(self, place: Path) -> Iterator[tuple[float, str, int]]:
        """(mtime, token, size) of each document file in a key's folder."""
        try:
            with os.scandir(place) as scan:
                entries = list(scan)
        except OSError:
            return
        for entry in entries:
            token, dot, suffix = entry.name.partition(".")
            if suffix != "pdf" or not dot or not _HEX32.fullmatch(token):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if S_ISREG(st.st_mode):
                yield st.st_mtime, token, st.st_size
            else:  # a link, pipe or device under a name of ours: the name goes
                self._remove(place, token)

    def _all(self) -> Iterator[tuple[float, Path, str, int]]:
        """(last used, key folder, token, size) of every document; removes stale scratch files
        (and links to documents whose readers died) and empty key folders on the way."""
        now = time.time()
        try:
            with os.scandir(self.folder) as scan:
                entries = list(scan)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(TMP):
                with contextlib.suppress(OSError):  # (a link made, or a write: a new ctime)
                    if now - entry.stat(follow_symlinks=False).st_ctime > STALE_TMP:
                        os.unlink(entry.path)
                continue
            if not (_HEX32.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
                continue
            place = Path(entry.path)
            documents = list(self._documents_in(place))
            for mtime, token, size in documents:
                with contextlib.suppress(OSError):  # when it was last used (see find)
                    mtime = max(mtime, _mtime(place / f"{token}.json"))
                yield mtime, place, token, size
            if not documents:
                with contextlib.suppress(OSError):
                    for name in os.listdir(place):  # descriptions left without a document
                        if name.endswith(".json") and now - _mtime(place / name) > STALE_TMP:
                            os.unlink(place / name)
                    os.rmdir(place)

    def _meta(self, path: Path) -> _Meta | None:
        """A document's description, or None when it is missing or not one."""
        try:
            fd = os.open(path, READ)
        except OSError:
            return None
        try:
            if not S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.read(fd, _MAX_META + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            found: Any = json.loads(data)
            sources, pages = found["sources"], found["pages"]
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(sources, list) and isinstance(pages, str)):
            return None
        if not all(isinstance(s, str) and valid_source(s) for s in sources):
            return None
        return _Meta(tuple(sources), pages)

    def _valid(self, key: str, place: Path, token: str) -> bool:
        """Whether the document ``token`` of ``key`` is whole and all its markers hold it."""
        meta = self._meta(place / f"{token}.json")
        return meta is not None and self._marked(key, token, meta.sources)

    def _marked(self, key: str, token: str, sources: Iterable[str]) -> bool:
        """Whether the marker of every source holds ``token`` (none was purged since)."""
        want = token.encode("ascii")
        for source in set(sources):
            try:
                with opened(self.root / source) as folder:
                    if not _holds(folder, key, want):
                        return False
            except OSError:
                return False
        return True

    def _open_source(self, source: str) -> int:
        """A descriptor of a source's folder in the disk tier, made if missing (never a link)."""
        path = self.root / source
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        return os.open(path, FOLDER)

    def _remove(self, place: Path, token: str) -> None:
        """One document: its file, its description, and its markers that still hold it."""
        meta = self._meta(place / f"{token}.json")
        if meta is not None:
            self.unmark(place.name, token, meta.sources)
        for name in (f"{token}.pdf", f"{token}.json"):
            with contextlib.suppress(OSError):
                os.unlink(place / name)


def _check_key(key: str) -> None:
    if not _HEX32.fullmatch(key):
        raise ValueError("not a document key")


def _mtime(path: Path) -> float:
    return os.stat(path, follow_symlinks=False).st_mtime


class DocumentStore:
    """The folder for the event loop: its blocking calls run in threads, and a failing disk is
    a miss or a document not kept, logged once a minute."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.folder = DocumentFolder(root, max_bytes)
        self._quietly = OffLoop("PDF cache", self.folder.folder)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def find(self, key: str, pages: str | None = None, claim: bool = False) -> Kept | None:
        """As :meth:`DocumentFolder.find`; a claimed link made for a caller that was cancelled
        meanwhile is removed."""
        found: Kept | None = await owned(self._quietly(self.folder.find, key, pages, claim), _gone)
        return found

    async def begin(self, key: str, sources: Sequence[str]) -> str | None:
        """The build's token; None when the markers cannot be written (it will not be kept)."""
        token: str | None = await self._quietly(self.folder.begin, key, sources)
        return token

    def forsake(self, key: str, token: str, sources: Sequence[str]) -> None:
        """:meth:`DocumentFolder.unmark` in the background (a build that is being cancelled
        asks for it: it cannot wait)."""
        task = asyncio.get_running_loop().create_task(
            self._quietly(self.folder.unmark, key, token, sources)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def keep(
        self, key: str, token: str, built: Path, sources: Sequence[str], pages: str
    ) -> Kept | None:
        kept: Kept | None = await self._quietly(self.folder.keep, key, token, built, sources, pages)
        return kept


def _gone(kept: Kept | None) -> None:
    if kept is not None:
        with contextlib.suppress(OSError):
            os.unlink(kept.path)


async def owned(work: Awaitable[T], release: Callable[[T], None]) -> T:
    """``work``'s result (say, a thread that makes a file). When the caller is cancelled before
    it comes, ``release`` gets it once it does: what the thread made is not left behind."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:

        def landed(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                release(done.result())

        task.add_done_callback(landed)
        raise


def _holds(folder: int, key: str, want: bytes) -> bool:
    """Whether the marker of ``key`` in the source folder open as ``folder`` holds ``want``
    (a regular file holding exactly it); OSError when there is none or it cannot be read."""
    fd = os.open(MARKER + key, READ, dir_fd=folder)
    try:
        return S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 64) == want
    finally:
        os.close(fd)


def _make_dir(path: Path) -> None:
    """The folder at ``path``, made if missing; NotADirectoryError when something else is."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    if not S_ISDIR(os.lstat(path).st_mode):
        raise NotADirectoryError(f"{path} is not a folder")
