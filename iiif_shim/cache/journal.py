"""Purge journals: how a purge reaches the processes that Redis does not (or that are not told
through it): an append-only file of purges (``purge.journal`` in ``$IIIF_SHIM_RUN_DIR``, which a
supervisor of several processes sets, and in the disk folder), each line ``purge <source|*>
<time>``, that every process reads from where it last stopped, about once a second.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from iiif_shim.cache.entry import valid_source
from iiif_shim.cache.settings import CacheSettings

RUN_DIR_ENV = "IIIF_SHIM_RUN_DIR"
JOURNAL = "purge.journal"
JOURNAL_POLL = 1.0  # seconds between two looks at the purge journal
JOURNAL_MAX = 1024 * 1024  # bytes; the journal is emptied before it grows past this
ALL = "*"


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


class PurgeJournal:
    """An append-only file of purges (one ``purge <source|*> <time>`` line each), read by
    every process from where it last stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._offset = self.path.stat().st_size  # purges from before this process are done

    def append(self, source: str | None) -> None:
        line = f"purge {source or ALL} {time.time():.3f}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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
            with self.path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:  # emptied and written again
                    self._offset = 0
                if size == self._offset:
                    return []
                f.seek(self._offset)
                data = f.read(min(size - self._offset, JOURNAL_MAX * 2))
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
