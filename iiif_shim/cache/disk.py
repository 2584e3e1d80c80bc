"""The disk tier: rendered images and source facts in one folder, shared by every process of a
machine.

Layout (``cache.disk``)::

    <root>/.iiif-shim-cache        marker: this folder belongs to the cache
    <root>/purge.journal           purges, for the processes of the machine (``journal.py``)
    <root>/<source>/<key>          one rendered image
    <root>/<source>/facts          the source's facts (until cache.info_ttl passes)
    <root>/<source>/.tmp-...       an entry being written

``<source>`` is the slot's source key (``entry.source_key`` of the backend and native
identifier, so a purge of one source removes one folder), ``<key>`` the plan's key (everything
that changes the bytes). An entry is encoded by ``entry.py`` (checked and bound to its slot). It
is written to a temporary file in the same folder and renamed into place (``os.replace``), so a
reader in any process sees a whole entry or none; one that fails its checks (torn by a crash,
damaged on disk, not ours, written for another slot, expired) is a miss and is removed.

Nothing is followed out of the folder. A source folder is opened as a directory that is no
link (``O_DIRECTORY | O_NOFOLLOW``) and everything in it through that descriptor
(``dir_fd``): reads, writes, renames, removals, the eviction scan and purges. An entry is read
only as a regular file: looked at first (``lstat``), so a link, pipe or device found under its
name is not opened; then opened ``O_NOFOLLOW`` and non-blocking (what was swapped in between
cannot stop a thread) and refused by ``fstat`` unless it is a regular file. Its fixed header is
read first, then exactly the lengths it states (the body in one read, handed on as it was
read) when that is the file's size and within the budget per entry. A link, pipe, device or
folder under a name of ours, or a link in place of a source folder, is rejected and removed
(the name, never what it points to). The purge journal is opened the same way
(``journal.py``).

LRU by modification time: a hit touches the entry, eviction removes the oldest first. Each
process counts what it wrote since it last looked at the folder; when that passes the budget
(or a sixteenth of it), it takes the lock of the cache folder itself (``flock`` of its
descriptor, never waited for: if another process holds it, that one is evicting) and removes
the oldest entries until the folder holds at most 90% of ``cache.disk_bytes``. With several
processes writing at once the folder may briefly hold more than the budget, by at most a
sixteenth of it per process.

Only names of ours (32 and 64 hex digits, ``facts``, the journal's) are ever removed, the
marker is only ever written as a new file (never through a link), and a non-empty folder
without it is refused, so a mistyped ``cache.disk`` cannot empty a folder of other files.
:class:`DiskTier` is the tier the facade uses: the folder's blocking methods run through
``asyncio.to_thread``, and a failing disk is a miss (logged once a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from iiif_shim.base.errors import ConfigError
from iiif_shim.base.files import FOLDER, NEW, READ
from iiif_shim.cache.entry import (
    DAMAGED,
    ENTRY_SLACK,
    HEADER_SIZE,
    NOT_A_FILE,
    OVERSIZE,
    Entry,
    Rejected,
    Slot,
    encode,
    examine_parts,
    header,
    valid_name,
    valid_source,
)
from iiif_shim.cache.folder import (
    LOW_WATER,
    STALE_TMP,
    TMP,
    TOUCH_AFTER,
    OffLoop,
    write_in,
)
from iiif_shim.cache.journal import JOURNAL

log = logging.getLogger("iiif_shim")

MARKER = ".iiif-shim-cache"
LOCK = ".lock"  # the lock file of earlier releases (the folder itself is locked now)
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)  # a link, or a file, where a folder should be


class PurgeIncomplete(OSError):
    """Entries that a purge could not remove (a read-only or immutable folder, say), and
    source folders it could not even read (how many entries they hold is not known)."""

    def __init__(self, removed: int, remaining: int, unread: int, cause: OSError | None) -> None:
        why = f" ({cause.strerror or cause})" if cause is not None else ""
        parts = []
        if remaining or not unread:
            parts.append(f"{remaining} {'entry remains' if remaining == 1 else 'entries remain'}")
        if unread:
            parts.append(f"{unread} source {'folder' if unread == 1 else 'folders'} unread")
        super().__init__(f"{', '.join(parts)}, {removed} removed{why}")
        self.removed = removed
        self.remaining = remaining
        self.unread = unread


class DiskCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_entry = max_bytes // 4  # a larger image is not kept
        self._estimate = 0  # bytes in the folder, as last seen plus what this process wrote
        self._since_scan = 0

    # --- lifecycle -------------------------------------------------------------------------

    def open(self, scan: bool = True) -> None:
        """Make the folder (or check it is ours) and learn its size."""
        root = self.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            marker = root / MARKER
            if not _is_file(marker):
                foreign = [p.name for p in root.iterdir() if p.name not in (LOCK, JOURNAL)]
                # another process opening the folder at the same time may have just written the
                # marker (and its first entries): the folder is ours after all
                if foreign and not _is_file(marker):
                    raise ConfigError(
                        [
                            (
                                "cache.disk",
                                f"{root} is not empty and is not a cache folder of iiif-shim "
                                f"(no {MARKER} in it); give the disk tier a folder of its own",
                            )
                        ]
                    )
                with contextlib.suppress(FileExistsError):  # (written by another process)
                    fd = os.open(marker, NEW, 0o644)  # never through a link
                    try:
                        os.write(fd, b"iiif-shim disk cache, format 2\n")
                    finally:
                        os.close(fd)
        except OSError as exc:
            raise ConfigError([("cache.disk", f"cannot use {root}: {exc}")]) from None
        if scan:
            self._estimate = sum(size for _, size, _, _ in self._entries())

    # --- entries ---------------------------------------------------------------------------

    @property
    def _limit(self) -> int:
        return self.max_entry + ENTRY_SLACK

    def _folder(self, source: str, create: bool = False) -> int | None:
        """A descriptor of the source's folder (never through a link), or ``None`` when there
        is none. ``create``: make it, replacing a link or file in its place. OSError with
        ``ELOOP`` or ``ENOTDIR`` for a link or file in its place otherwise."""
        path = self.root / source
        for _ in range(3):
            try:
                return os.open(path, FOLDER)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
            except OSError as exc:
                if not create or exc.errno not in _NOT_A_FOLDER:
                    raise
                os.unlink(path)  # a name of ours: the link itself goes, not what it points to
        return os.open(path, FOLDER)

    def get(self, slot: Slot) -> Entry | Rejected | None:
        """The entry, touched (most recently used); ``None`` when there is none (or it
        expired); :class:`Rejected` when what is there is not an entry of this slot in a
        regular file of the folder. Whatever is not a value is removed."""
        try:
            folder = self._folder(slot.source)
        except OSError as exc:
            if exc.errno not in _NOT_A_FOLDER:
                raise
            self._remove_name(slot.source)
            return Rejected(NOT_A_FILE)
        if folder is None:
            return None
        try:
            return self._get_in(folder, slot)
        finally:
            os.close(folder)

    def _get_in(self, folder: int, slot: Slot) -> Entry | Rejected | None:
        try:
            # looked at before it is opened, so a device found there is not opened (opening
            # some has effects); what is opened is checked again (it may have been swapped)
            if not S_ISREG(os.stat(slot.name, dir_fd=folder, follow_symlinks=False).st_mode):
                _remove_same(folder, slot.name, None)
                return Rejected(NOT_A_FILE)
            fd = os.open(slot.name, READ, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            _remove_same(folder, slot.name, None)
            return Rejected(NOT_A_FILE)
        try:
            stat = os.fstat(fd)
            found = self._read(fd, slot, stat.st_mode, stat.st_size)
        finally:
            os.close(fd)
        if not isinstance(found, Entry):  # rejected or expired: not a value, removed
            _remove_same(folder, slot.name, stat)
        elif time.time() - stat.st_mtime > TOUCH_AFTER:  # hot entries: not written each hit
            with contextlib.suppress(OSError):
                os.utime(slot.name, dir_fd=folder, follow_symlinks=False)
        return found

    def _read(self, fd: int, slot: Slot, mode: int, size: int) -> Entry | Rejected | None:
        """The entry in the open file: its header first, then exactly the media type and the
        body it states (the body in one read, as a rule, and never copied afterwards)."""
        if not S_ISREG(mode):
            return Rejected(NOT_A_FILE)
        if size > self._limit:
            return Rejected(OVERSIZE)
        head = header(_read_exactly(fd, HEADER_SIZE))
        if head is None or head.size != size:
            return Rejected(DAMAGED)
        media = _read_exactly(fd, head.media_length)
        body = _read_exactly(fd, head.body_length)
        return examine_parts(slot, head, media, body, time.time())

    def _remove_name(self, name: str) -> None:
        """Remove a link or file that stands where a source folder should (never a folder)."""
        with contextlib.suppress(OSError):
            if not S_ISDIR(os.lstat(self.root / name).st_mode):
                os.unlink(self.root / name)

    def put(self, slot: Slot, value: Entry, expires: float = 0.0) -> bool:
        """Keep ``value`` (atomically); False when it is too large to keep."""
        data = encode(slot, value, expires)
        if len(data) > self._limit:
            return False
        for attempt in range(2):  # the folder may vanish under us (purge, eviction)
            try:
                folder = self._folder(slot.source, create=True)
                assert folder is not None
                try:
                    write_in(folder, slot.name, data)
                except IsADirectoryError:  # a folder under the entry's name: it goes
                    if attempt:
                        raise
                    _remove_same(folder, slot.name, None)
                    continue
                finally:
                    os.close(folder)
                break
            except FileNotFoundError:
                if attempt:
                    raise
        self._estimate += len(data)
        self._since_scan += len(data)
        if self._estimate > self.max_bytes or self._since_scan > self.max_bytes // 16:
            self.evict()
        return True

    def delete(self, slot: Slot) -> None:
        """Remove the slot's entry, if there is one."""
        with contextlib.suppress(OSError):
            folder = self._folder(slot.source)
            if folder is not None:
                try:
                    os.unlink(slot.name, dir_fd=folder)
                finally:
                    os.close(folder)

    # --- eviction and purge ----------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[float, int, str, str]]:
        """(mtime, size, source, name) of every entry, the name empty for a temporary file
        (counted, never evicted); removes stale temporary files on the way. Never follows a
        link: a source folder is scanned through its descriptor."""
        now = time.time()
        for source in _source_names(self.root):
            try:
                folder = self._folder(source)
            except OSError:  # a link or file in a source folder's place, or unreadable
                continue
            if folder is None:
                continue
            try:
                with os.scandir(folder) as scan:
                    files = list(scan)
                for entry in files:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.name.startswith(TMP):
                        if now - st.st_mtime > STALE_TMP:
                            with contextlib.suppress(OSError):
                                os.unlink(entry.name, dir_fd=folder)
                        else:
                            yield st.st_mtime, st.st_size, source, ""
                    elif valid_name(entry.name) and S_ISREG(st.st_mode):
                        yield st.st_mtime, st.st_size, source, entry.name
            except OSError:
                continue
            finally:
                os.close(folder)
            if not files:
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / source)  # (rmdir never follows a link)

    def learn_size(self) -> None:
        """Scan the folder once (blocking) for the size the budget is checked against."""
        self._estimate = max(self._estimate, self.size())

    def size(self) -> int:
        """Bytes the folder's entries take now (a full scan)."""
        return sum(size for _, size, _, _ in self._entries())

    def evict(self) -> int:
        """Remove the least recently used entries until at most ``LOW_WATER`` of the budget is
        used; returns how many went (0 if another process is evicting right now)."""
        with self._locked(wait=False) as held:
            if not held:
                self._since_scan = 0
                return 0
            entries = list(self._entries())
            total = sum(size for _, size, _, _ in entries)
            removed = 0
            if total > self.max_bytes:
                target = int(self.max_bytes * LOW_WATER)
                for _, size, source, name in sorted(entries):
                    if total <= target:
                        break
                    if not name:
                        continue
                    try:
                        self._unlink(source, name)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        continue
                    total -= size
                    removed += 1
            self._estimate = total
            self._since_scan = 0
            return removed

    def _unlink(self, source: str, name: str) -> None:
        folder = self._folder(source)
        if folder is None:
            raise FileNotFoundError(errno.ENOENT, "no such source folder", source)
        try:
            os.unlink(name, dir_fd=folder)
        finally:
            os.close(folder)

    def purge(self, source: str | None) -> int:
        """Remove the entries of one source (``None``: of every source); how many went.
        :class:`PurgeIncomplete` (an OSError) when some could not be removed: it says how
        many remain. A link or file in a source folder's place is removed itself, never
        followed."""
        if source is not None and not valid_source(source):
            raise ValueError("not a source key")
        sources = [source] if source else _source_names(self.root)
        removed = remaining = unread = 0
        cause: OSError | None = None
        for name in sources:
            try:
                gone, left, problem = self._purge_folder(name)
            except OSError as exc:  # a folder that cannot be read: what it holds is not known
                gone, left, problem = 0, 0, exc
                unread += 1
            removed += gone
            remaining += left
            cause = cause or problem
        if remaining or unread:
            raise PurgeIncomplete(removed, remaining, unread, cause)
        if source is None:
            self._estimate = 0
        return removed

    def _purge_folder(self, source: str) -> tuple[int, int, OSError | None]:
        """(entries removed, entries left, why) for one source folder, removed with them."""
        try:
            folder = self._folder(source)
        except OSError as exc:
            if exc.errno not in _NOT_A_FOLDER:
                raise
            with contextlib.suppress(FileNotFoundError):  # (another purge may remove it first)
                os.unlink(self.root / source)  # a link or file in its place: that name goes
            return 0, 0, None
        if folder is None:
            return 0, 0, None
        removed, left, cause = 0, 0, None
        try:
            for _ in range(3):  # a writer in another process may add a file meanwhile
                left, cause = 0, None
                with os.scandir(folder) as scan:
                    names = [(e.name, e.is_dir(follow_symlinks=False)) for e in scan]
                for name, is_folder in names:
                    try:
                        if is_folder:  # nothing of ours, but a purge empties the folder
                            shutil.rmtree(name, dir_fd=folder)
                        else:
                            os.unlink(name, dir_fd=folder)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        left += valid_name(name) or is_folder
                        cause = exc
                        continue
                    removed += valid_name(name)
                try:
                    os.rmdir(self.root / source)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if left:
                        cause = cause or exc
                        break
        finally:
            os.close(folder)
        return removed, left, cause

    @contextlib.contextmanager
    def _locked(self, wait: bool) -> Iterator[bool]:
        """The lock of the cache folder: ``flock`` of the folder's own descriptor (no file in
        it, so nothing put under a name in the folder can keep eviction from running)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not through a link)."""
    try:
        return S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _source_names(root: Path) -> list[str]:
    """Names in ``root`` shaped like source keys (folders, or links and files in their place)."""
    try:
        with os.scandir(root) as scan:
            return [e.name for e in scan if valid_source(e.name)]
    except OSError:
        return []


def _read_exactly(fd: int, count: int) -> bytes:
    """``count`` bytes from ``fd``, fewer only where the file ends: one read of a regular file,
    as a rule, whose bytes are returned as they are (never joined, never copied)."""
    first = os.read(fd, count) if count > 0 else b""
    if len(first) == count or not first:
        return first
    parts = [first]
    count -= len(first)
    while count > 0:
        part = os.read(fd, count)
        if not part:
            break
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


def _remove_same(folder: int, name: str, seen: os.stat_result | None) -> None:
    """Remove ``name`` from the folder if it is still the file ``seen`` (``None``: whatever it
    is), so an entry another process has just renamed into place stays. A folder under the
    name goes with what it holds (through descriptors: nothing in it is followed)."""
    with contextlib.suppress(OSError):
        now = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if seen is not None and (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
            return
        if S_ISDIR(now.st_mode):
            shutil.rmtree(name, dir_fd=folder)
        else:
            os.unlink(name, dir_fd=folder)


class DiskTier:
    """The folder as a tier of the facade: its blocking calls run off the event loop, and a
    failing disk is a miss or a write not made, logged once a minute."""

    name = "disk"

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.folder = DiskCache(root, max_bytes)
        self._quietly = OffLoop("disk cache", root)

    async def open(self) -> None:
        """Make the folder or check it is ours (ConfigError if it is not), without scanning."""
        await asyncio.to_thread(self.folder.open, False)

    async def learn_size(self) -> None:
        await asyncio.to_thread(self.folder.learn_size)

    async def get(self, slot: Slot) -> Entry | Rejected | None:
        found: Entry | Rejected | None = await self._quietly(self.folder.get, slot)
        return found

    async def put(self, slot: Slot, value: Entry, ttl: float) -> None:
        expires = time.time() + ttl if ttl else 0.0
        await self._quietly(self.folder.put, slot, value, expires)

    async def delete(self, slot: Slot) -> None:
        await self._quietly(self.folder.delete, slot)

    async def purge(self, source: str | None) -> int:
        """Remove one source's entries (``None``: every source); OSError when it fails
        (:class:`PurgeIncomplete` when entries remain, saying how many)."""
        removed: int = await asyncio.to_thread(self.folder.purge, source)
        return removed
