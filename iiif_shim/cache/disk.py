"""The disk tier: rendered images and source facts in one folder, shared by every process of a
machine.

Layout (``cache.disk``)::

    <root>/.iiif-shim-cache        marker: this folder belongs to the cache
    <root>/.lock                   flock taken while evicting
    <root>/<source>/<key>          one rendered image
    <root>/<source>/facts          the source's facts (until cache.info_ttl passes)
    <root>/<source>/.tmp-...       an entry being written

``<source>`` is the slot's source key (``entry.source_key`` of the backend and native
identifier, so a purge of one source removes one folder), ``<key>`` the plan's key (everything
that changes the bytes). An entry is encoded by ``entry.py`` (checked and bound to its slot). It
is written to a temporary file in the same folder and renamed into place (``os.replace``), so a
reader in any process sees a whole entry or none; one that fails its checks (torn by a crash,
damaged on disk, not ours, written for another slot, expired) is a miss and is removed.

LRU by modification time: a hit touches the entry, eviction removes the oldest first. Each
process counts what it wrote since it last looked at the folder; when that passes the budget
(or a sixteenth of it), it takes the folder's lock (``flock``, never waited for: if another
process holds it, that one is evicting) and removes the oldest entries until the folder holds
at most 90% of ``cache.disk_bytes``. With several processes writing at once the folder may
briefly hold more than the budget, by at most a sixteenth of it per process.

Only names shaped like ours (32 and 64 hex digits, ``facts``) are ever removed, and a non-empty
folder without the marker is refused, so a mistyped ``cache.disk`` cannot empty a folder of
other files. :class:`DiskTier` is the tier the facade uses: the folder's blocking methods run
through ``asyncio.to_thread``, and a failing disk is a miss (logged once a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from stat import S_ISREG
from typing import Any

from iiif_shim.base.errors import ConfigError
from iiif_shim.cache.entry import ENTRY_SLACK, Entry, Slot, decode, encode, valid_name, valid_source
from iiif_shim.cache.journal import JOURNAL

log = logging.getLogger("iiif_shim")

MARKER = ".iiif-shim-cache"
LOCK = ".lock"
TMP = ".tmp-"
_STALE_TMP = 3600.0  # seconds after which a temporary file is a crash's leftover
LOW_WATER = 0.9  # eviction stops at this share of the budget
# seconds since an entry was last touched before a hit touches it again (LRU order is
# coarse by this much; a hot tile costs no metadata write per hit)
_TOUCH_AFTER = 60.0


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
            if not marker.exists():
                foreign = [p.name for p in root.iterdir() if p.name not in (LOCK, JOURNAL)]
                # another process opening the folder at the same time may have just written the
                # marker (and its first entries): the folder is ours after all
                if foreign and not marker.exists():
                    raise ConfigError(
                        [
                            (
                                "cache.disk",
                                f"{root} is not empty and is not a cache folder of iiif-shim "
                                f"(no {MARKER} in it); give the disk tier a folder of its own",
                            )
                        ]
                    )
                marker.write_text("iiif-shim disk cache, format 2\n")
        except OSError as exc:
            raise ConfigError([("cache.disk", f"cannot use {root}: {exc}")]) from None
        if scan:
            self._estimate = sum(size for _, size, _ in self._entries())

    # --- entries ---------------------------------------------------------------------------

    def path(self, slot: Slot) -> Path:
        return self.root / slot.source / slot.name

    def get(self, slot: Slot) -> Entry | None:
        """The entry, touched (most recently used), or None; a damaged one is removed. Only a
        regular file is read (never through a link, never a device or a pipe)."""
        path = self.path(slot)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # missing, a link, unreadable
            return None
        try:
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode) or stat.st_size > self.max_entry + ENTRY_SLACK:
                data = b""
            else:
                with os.fdopen(os.dup(fd), "rb") as f:
                    data = f.read(self.max_entry + ENTRY_SLACK)
        except OSError:
            return None
        finally:
            os.close(fd)
        value = decode(slot, data, time.time())
        if value is None:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if time.time() - stat.st_mtime > _TOUCH_AFTER:  # hot entries are not written each hit
            with contextlib.suppress(OSError):
                os.utime(path, follow_symlinks=False)
        return value

    def put(self, slot: Slot, value: Entry, expires: float = 0.0) -> bool:
        """Keep ``value`` (atomically); False when it is too large to keep."""
        data = encode(slot, value, expires)
        if len(data) > self.max_entry + ENTRY_SLACK:
            return False
        path = self.path(slot)
        for attempt in range(2):  # the folder may vanish under us (purge, eviction)
            try:
                path.parent.mkdir(exist_ok=True)
                tmp = path.parent / f"{TMP}{os.getpid()}-{secrets.token_hex(6)}"
                try:
                    with tmp.open("xb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    raise
                break
            except FileNotFoundError:
                if attempt:
                    raise
        self._estimate += len(data)
        self._since_scan += len(data)
        if self._estimate > self.max_bytes or self._since_scan > self.max_bytes // 16:
            self.evict()
        return True

    # --- eviction and purge ----------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[float, int, str]]:
        """(mtime, size, path) of every entry; removes stale temporary files on the way."""
        now = time.time()
        try:
            sources = list(os.scandir(self.root))
        except OSError:
            return
        for folder in sources:
            if not (valid_source(folder.name) and folder.is_dir(follow_symlinks=False)):
                continue
            try:
                files = list(os.scandir(folder.path))
            except OSError:
                continue
            for entry in files:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.name.startswith(TMP):
                    if now - st.st_mtime > _STALE_TMP:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                    else:
                        yield st.st_mtime, st.st_size, ""  # counted, never evicted
                elif valid_name(entry.name) and entry.is_file(follow_symlinks=False):
                    yield st.st_mtime, st.st_size, entry.path
            if not files:
                with contextlib.suppress(OSError):
                    os.rmdir(folder.path)

    def learn_size(self) -> None:
        """Scan the folder once (blocking) for the size the budget is checked against."""
        self._estimate = max(self._estimate, self.size())

    def size(self) -> int:
        """Bytes the folder's entries take now (a full scan)."""
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> int:
        """Remove the least recently used entries until at most ``LOW_WATER`` of the budget is
        used; returns how many went (0 if another process is evicting right now)."""
        with self._locked(wait=False) as held:
            if not held:
                self._since_scan = 0
                return 0
            entries = list(self._entries())
            total = sum(size for _, size, _ in entries)
            removed = 0
            if total > self.max_bytes:
                target = int(self.max_bytes * LOW_WATER)
                for _, size, path in sorted(entries):
                    if total <= target:
                        break
                    if not path:
                        continue
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        continue
                    total -= size
                    removed += 1
            self._estimate = total
            self._since_scan = 0
            return removed

    def purge(self, source: str | None) -> int:
        """Remove the entries of one source (``None``: of every source); how many there were."""
        if source is not None and not valid_source(source):
            raise ValueError("not a source key")
        folders = [self.root / source] if source else _source_folders(self.root)
        count = 0
        for folder in folders:
            with contextlib.suppress(OSError):
                count += sum(1 for name in os.listdir(folder) if valid_name(name))
            for _ in range(3):  # a writer in another process may add a file meanwhile
                shutil.rmtree(folder, ignore_errors=True)
                if not folder.exists():
                    break
        self._estimate = 0 if source is None else self._estimate
        return count

    @contextlib.contextmanager
    def _locked(self, wait: bool) -> Iterator[bool]:
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock


def _source_folders(root: Path) -> list[Path]:
    try:
        return [
            Path(e.path)
            for e in os.scandir(root)
            if valid_source(e.name) and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return []


class DiskTier:
    """The folder as a tier of the facade: its blocking calls run off the event loop, and a
    failing disk is a miss or a write not made, logged once a minute."""

    name = "disk"

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.folder = DiskCache(root, max_bytes)
        self._failed_at = 0.0

    async def open(self) -> None:
        """Make the folder or check it is ours (ConfigError if it is not), without scanning."""
        await asyncio.to_thread(self.folder.open, False)

    async def learn_size(self) -> None:
        await asyncio.to_thread(self.folder.learn_size)

    async def get(self, slot: Slot) -> Entry | None:
        found: Entry | None = await self._quietly(self.folder.get, slot)
        return found

    async def put(self, slot: Slot, value: Entry, ttl: float) -> None:
        expires = time.time() + ttl if ttl else 0.0
        await self._quietly(self.folder.put, slot, value, expires)

    async def purge(self, source: str | None) -> int:
        """Remove one source's entries (``None``: every source); OSError when it fails."""
        removed: int = await asyncio.to_thread(self.folder.purge, source)
        return removed

    async def _quietly(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(call, *args)
        except OSError as exc:
            now = time.monotonic()
            if now - self._failed_at > 60:
                self._failed_at = now
                log.warning("disk cache %s: %s (going on without it)", self.folder.root, exc)
            return None
