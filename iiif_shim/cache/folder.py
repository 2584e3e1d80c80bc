"""Files inside a cache folder on disk, handled so that nothing is followed out of it: the open
flags (``base/files.py``'s: never through a link, never blocking on a pipe, never inherited by
a child), the names
of scratch files, a file written whole or not at all, and blocking folder work run off the event
loop with a failing disk logged once a minute. Used by the disk tier (``disk.py``) and the kept
PDFs (``documents.py``), which share the disk tier's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from iiif_shim.base.files import FOLDER, NEW

log = logging.getLogger("iiif_shim")

TMP = ".tmp-"  # the prefix of a scratch file: renamed into place by its writer, or left over
STALE_TMP = 3600.0  # seconds after which a scratch file is a crash's leftover
LOW_WATER = 0.9  # eviction stops at this share of the budget
# seconds since a file was last touched before a hit touches it again (LRU order is coarse by
# this much; a hot file costs no metadata write per hit)
TOUCH_AFTER = 60.0
_LOG_EVERY = 60.0  # seconds between two warnings of one failing folder


def scratch_name(suffix: str = "") -> str:
    """A name for a scratch file no other writer (thread or process) picks."""
    return f"{TMP}{os.getpid()}-{secrets.token_hex(6)}{suffix}"


def write_in(folder: int, name: str, data: bytes) -> None:
    """``data`` as file ``name`` of the folder open as ``folder``, whole or not at all (a
    scratch file renamed into place)."""
    tmp = scratch_name()
    try:
        fd = os.open(tmp, NEW, 0o644, dir_fd=folder)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise


@contextlib.contextmanager
def opened(path: Path) -> Iterator[int]:
    """The folder at ``path`` as a descriptor (OSError when it is a link or not a folder)."""
    fd = os.open(path, FOLDER)
    try:
        yield fd
    finally:
        os.close(fd)


class OffLoop:
    """Blocking calls on a folder, run in a thread; a call that fails with OSError is ``None``
    (a miss, or a write not made), and the failure is logged at most once a minute."""

    def __init__(self, what: str, where: Path) -> None:
        self.what = what
        self.where = where
        self._failed_at = -_LOG_EVERY

    async def __call__(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(call, *args)
        except OSError as exc:
            now = time.monotonic()
            if now - self._failed_at > _LOG_EVERY:
                self._failed_at = now
                log.warning("%s %s: %s (going on without it)", self.what, self.where, exc)
            return None
