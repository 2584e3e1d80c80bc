"""Purge journals: how a purge reaches the processes that Redis does not (or that are not told
through it): an append-only file of purges (``purge.journal`` in ``$IIIF_SHIM_RUN_DIR``, which a
supervisor of several processes sets, and in the disk folder), each line ``purge <source|*>
<time>``, that every process reads from where it last stopped, about once a second.

A journal is only ever a regular file of its folder: opened ``O_NOFOLLOW`` and non-blocking,
after a look that keeps a pipe or a device found there from being opened, and checked by
``fstat``. Whatever else stands under its name (a link, a pipe, a device, a folder) is read as
an empty journal, and replaced by a new file by the next process to start or purge; what it
points to is never read, written or truncated.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from iiif_shim.base.files import READ
from iiif_shim.cache.entry import valid_source
from iiif_shim.cache.settings import CacheSettings

RUN_DIR_ENV = "IIIF_SHIM_RUN_DIR"
JOURNAL = "purge.journal"
JOURNAL_POLL = 1.0  # seconds between two looks at the purge journal
JOURNAL_MAX = 1024 * 1024  # bytes; the journal is emptied before it grows past this
ALL = "*"
# what opening a name where no regular file stands answers: a link, a folder, a pipe unread
_NOT_A_FILE = (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR)


def journal_paths(settings: CacheSettings) -> list[Path]:
    """Where purges are written and read: in ``$IIIF_SHIM_RUN_DIR`` and in the disk folder
    (both when both exist, so a command run without the supervisor's variable still reaches
    its processes through the disk folder)."""
    paths = []
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        paths.append(Path(run_dir) / JOURNAL)
    if settings.disk is not None:
        paths.append(settings.disk / JOURNAL)
    return paths


def _open(path: Path, flags: int) -> int | None:
    """A descriptor of the journal at ``path`` as a regular file; ``None`` when something else
    stands there (or nothing, without ``O_CREAT`` in ``flags``). With ``O_CREAT``, what else
    stands there is removed (the name, never what it points to) and a new file made."""
    create = bool(flags & os.O_CREAT)
    for _ in range(3):
        try:
            if not S_ISREG(os.lstat(path).st_mode):  # a device found there is not opened
                raise OSError(errno.ELOOP, "not a regular file", str(path))
            fd = os.open(path, flags | READ, 0o644)
        except FileNotFoundError:
            if not create:
                return None
            with contextlib.suppress(FileExistsError):
                return os.open(path, flags | os.O_EXCL | READ, 0o644)
            continue
        except OSError as exc:
            if exc.errno not in _NOT_A_FILE:
                raise
            if not create:
                return None
            _remove(path)
            continue
        if S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)  # swapped since the look
        if not create:
            return None
        _remove(path)
    raise OSError(errno.EEXIST, "cannot make the purge journal a regular file", str(path))


def _remove(path: Path) -> None:
    """Remove what stands under the journal's name (a folder with what it holds)."""
    with contextlib.suppress(FileNotFoundError):
        if S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)  # (never follows a link inside)
        else:
            os.unlink(path)


class PurgeJournal:
    """An append-only file of purges (one ``purge <source|*> <time>`` line each), read by
    every process from where it last stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def start(self) -> None:
        """Make the journal (a regular file, whatever stood under its name) and start reading
        at its end: purges from before this process are done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open(self.path, os.O_RDONLY | os.O_CREAT)
        assert fd is not None
        try:
            self._offset = os.fstat(fd).st_size
        finally:
            os.close(fd)

    def append(self, source: str | None) -> None:
        line = f"purge {source or ALL} {time.time():.3f}\n".encode()
        fd = _open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        assert fd is not None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size > JOURNAL_MAX:
                os.ftruncate(fd, 0)  # readers past the end start again from 0
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> list[str | None]:
        """Purges appended since the last read (a source key, or None for all)."""
        try:
            fd = _open(self.path, os.O_RDONLY)
            if fd is None:
                return []
            try:
                size = os.fstat(fd).st_size
                if size < self._offset:  # emptied and written again
                    self._offset = 0
                if size == self._offset:
                    return []
                data = os.pread(fd, min(size - self._offset, JOURNAL_MAX * 2), self._offset)
            finally:
                os.close(fd)
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        self._offset += end
        found: list[str | None] = []
        for line in data[:end].decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "purge":
                if parts[1] == ALL:
                    found.append(None)
                elif valid_source(parts[1]):
                    found.append(parts[1])
        return found
