"""Where a large upstream body is held while the image engine reads it: an unnamed temporary
file (:class:`Spill`) in the backend's spill folder, written and closed on threads of its own
(:func:`run`), never on the event loop nor on the threads aiohttp resolves names with; and whether
that folder's bytes are memory (:func:`in_memory`: a ``tmpfs`` or ``ramfs``, as ``/tmp`` is on
some systems), in which case what is spilled there counts against the memory budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from iiif_shim.base.errors import NoRoom

log = logging.getLogger("iiif_shim")

T = TypeVar("T")
_FD_PATHS = Path("/proc/self/fd")
_MOUNTS = Path("/proc/self/mountinfo")
_MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
# Threads for spill files only (writes, closes): a slow or full disk stalls these, not DNS
# lookups nor the image work. Two: one body's writes go one after another.
_IO_THREADS = 2
_io: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _io
    if _io is None:
        _io = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="iiif-shim-spill")
    return _io


async def run(call: Callable[..., T], *args: object) -> T:
    """``call(*args)`` on the spill threads."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), call, *args)


def folder(configured: Path | None) -> Path:
    """The folder spills go to: ``configured``, else ``TMPDIR`` (``/tmp`` unless set)."""
    return configured if configured is not None else Path(tempfile.gettempdir())


def filesystem(path: Path) -> str | None:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``, ...), from
    ``/proc/self/mountinfo`` (the mount whose point is the longest prefix of the real path);
    ``None`` where that cannot be told."""
    try:
        real = path.resolve()
        lines = _MOUNTS.read_text().splitlines()
    except OSError:
        return None
    best, kind = -1, None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts, after = fields.split(), rest.split()
        if len(parts) < 5 or not after:
            continue
        point = Path(parts[4].encode().decode("unicode_escape"))  # \040 for a space
        if (real == point or point in real.parents) and len(point.parts) > best:
            best, kind = len(point.parts), after[0]
    return kind


def in_memory(path: Path) -> bool:
    """Whether files in ``path`` are held in RAM (``tmpfs``, ``ramfs``): what is spilled there
    is memory the process's cgroup is charged for, though not in its resident set."""
    return filesystem(path) in _MEMORY_FILESYSTEMS


def _close(file: IO[bytes]) -> None:
    """Close ``file`` on the spill threads (closing a large unnamed file frees its blocks,
    which takes milliseconds); at once when they are gone (at exit)."""
    try:
        _executor().submit(file.close)
    except RuntimeError:
        file.close()


class Spill:
    """An unnamed temporary file in ``where`` (``None``: ``TMPDIR``) holding one body, gone when
    the last reference to this object is: nothing is left behind, even by a process that is
    killed. :attr:`path` names it (``/proc/self/fd/N``) for whoever opens it while this object
    lives; where there is no ``/proc``, a named file removed when it is closed. Made, written
    and closed on the spill threads; a folder that is missing, full or not writable is
    :class:`NoRoom` (503), never the backend's fault."""

    def __init__(self, where: Path | None) -> None:
        self.file: IO[bytes]
        try:
            if _FD_PATHS.is_dir():
                self.file = tempfile.TemporaryFile(prefix="iiif-shim-body-", dir=where)  # noqa: SIM115
                self.path = _FD_PATHS / str(self.file.fileno())
            else:  # pragma: no cover - systems without /proc
                named = tempfile.NamedTemporaryFile(prefix="iiif-shim-body-", dir=where)  # noqa: SIM115
                self.file, self.path = named, Path(named.name)
        except OSError as exc:
            raise no_room(exc, where) from None
        self._closer = weakref.finalize(self, _close, self.file)

    def close(self) -> None:
        self._closer()

    def write(self, pieces: list[bytes]) -> None:
        """Append ``pieces`` (blocking: on the spill threads)."""
        self.file.writelines(pieces)

    def finish(self, pieces: list[bytes]) -> None:
        """Append the last ``pieces``, then rewind for the reader (blocking)."""
        self.file.writelines(pieces)
        self.file.flush()
        self.file.seek(0)


def no_room(exc: OSError, where: Path | None) -> NoRoom:
    """The 503 for a spill folder that failed: why in the log only (a path is never public)."""
    return NoRoom(
        "no room for the temporary file of a large upstream answer; try again later",
        detail=f"{folder(where)}: {os.strerror(exc.errno) if exc.errno else exc}",
    )
