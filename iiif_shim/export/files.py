"""Files of an export on disk: written whole or not at all, and never written twice.

Every file is written to a temporary name in its own folder (``.export-{pid}.{name}.part``) and
renamed into place once complete, so what exists under its real name is complete; a write that
fails or is interrupted removes its temporary file. A file that exists is skipped (a second run
resumes). Paths that hold the same pixels are hard links to the first (a copy where the
filesystem has no links). A run marks the folder while it works (``.export-running``); a run
that finds the mark of one that died without cleaning up (SIGKILL, a power cut) removes the
temporary files it left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

RUNNING = ".export-running"
_PART = ".part"
_TEMP_HEAD = ".export-"
_COPY_CHUNK = 1024 * 1024


def temporary(path: Path) -> Path:
    return path.with_name(f"{_TEMP_HEAD}{os.getpid()}.{path.name}{_PART}")


def write_bytes(path: Path, data: bytes) -> int:
    """``data`` at ``path``, atomically (blocking: run in a thread); bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary(path)
    try:
        with temp.open("xb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return len(data)


class Changed(OSError):
    """The file being copied was written while it was copied."""


def copy_open(path: Path, source: BinaryIO, changed: Callable[[], bool] | None = None) -> int:
    """An open file's bytes at ``path``, atomically (blocking); :class:`Changed` (nothing
    written) when ``changed()`` says the file was written meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary(path)
    written = 0
    try:
        with temp.open("xb") as out:
            source.seek(0)
            while chunk := source.read(_COPY_CHUNK):
                out.write(chunk)
                written += len(chunk)
        if changed is not None and changed():
            raise Changed(f"{path.name}: its source was written while it was copied")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return written


async def write_stream(
    path: Path,
    head: bytes,
    rest: AsyncIterator[bytes],
    in_thread: Callable[..., object],
) -> int:
    """A body arriving in chunks at ``path``, atomically: its temporary file removed if the
    body fails or the task is cancelled. ``in_thread(fn, *args)``: awaits ``fn`` off the loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary(path)
    out = temp.open("xb")
    written = 0
    try:
        await in_thread(out.write, head)  # type: ignore[misc]
        written += len(head)
        async for chunk in rest:
            await in_thread(out.write, chunk)  # type: ignore[misc]
            written += len(chunk)
        out.close()
        os.replace(temp, path)
    except BaseException:
        out.close()
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return written


def link(existing: Path, path: Path) -> None:
    """``path`` as a hard link to ``existing`` (a copy, atomically, where links fail)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(existing, path)
    except FileExistsError:
        return
    except OSError:  # no hard links here (another filesystem, a limit of links)
        with existing.open("rb") as source:
            copy_open(path, source)


def swept(root: Path) -> int:
    """Temporary files a run that died left below ``root`` removed (when its mark is there);
    how many."""
    if not (root / RUNNING).exists():
        return 0
    count = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith(_TEMP_HEAD) and name.endswith(_PART):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    count += 1
    return count


def mark(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / RUNNING).write_text(f"{os.getpid()}\n")


def unmark(root: Path) -> None:
    with contextlib.suppress(OSError):
        (root / RUNNING).unlink()
