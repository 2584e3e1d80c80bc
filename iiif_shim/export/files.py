"""Files of an export on disk: written whole or not at all, never through a symbolic link, one
run at a time.

:class:`Tree` writes below the export's folder (which may itself be a link) by relative paths:
each folder on the way is opened with ``O_NOFOLLOW`` from its parent's descriptor (made when
missing), so a symbolic link anywhere below the folder is :class:`LinkFound` (an error for the
file being written, never a write elsewhere). A file is written to a temporary name in its own
folder (``.export-{pid}.{name}.part``, created with ``O_EXCL|O_NOFOLLOW``), flushed to the disk
(``fsync``) and renamed into place, so what exists under its real name is complete, after a
power cut too; a write that fails or is interrupted removes its temporary file. Every call
here blocks: the export makes them in threads (a streamed body's too, chunk by chunk:
:meth:`Tree.write_stream`), never on the event loop. Paths that hold
the same pixels are hard links to the first (a copy where the filesystem has no links).

One run at a time: a run holds an exclusive ``flock`` on ``.iiif-export/lock`` (holding its
pid) for as long as it works; a second run is told which pid holds it. While it works the
folder carries ``.export-running``; a run that finds it (one died without cleaning up: SIGKILL,
a power cut) removes the temporary files it left, under the lock, so never a live run's. Every
run sweeps the temporary files it finds under the lock, whatever the marks say (an interrupted
run removes its mark, and a file it could not remove must not stay for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from iiif_shim.base.files import FOLDER, NEW, READ

RUNNING = ".export-running"
STATE = ".iiif-export"  # the folder's own records: the lock, the image stamps, the record
LOCK = f"{STATE}/lock"
_PART = ".part"
_TEMP_HEAD = ".export-"
_COPY_CHUNK = 1024 * 1024


class LinkFound(OSError):
    """A symbolic link where the export reads or writes below its folder."""


class Changed(OSError):
    """The file being copied was written while it was copied."""


class Locked(Exception):
    """Another run holds the folder's lock."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = pid


def temporary_name(name: str) -> str:
    return f"{_TEMP_HEAD}{os.getpid()}.{name}{_PART}"


def _split(rel: str) -> tuple[list[str], str]:
    parts = rel.split("/")
    return parts[:-1], parts[-1]


class Temp:
    """A temporary file being written in its folder (held open by ``fd``): written, then placed
    under its name (flushed to the disk first) or discarded. Blocking; one call at a time, and
    ``discard`` waits for a write still running in another thread."""

    def __init__(self, fd: int, temp: str, name: str, out: BinaryIO) -> None:
        self.fd = fd
        self.temp = temp
        self.name = name
        self.out = out
        self._lock = threading.Lock()
        self._open = True

    def write(self, data: bytes) -> None:
        with self._lock:
            self.out.write(data)

    def place(self) -> None:
        with self._lock:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            os.rename(self.temp, self.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            self._closed()

    def discard(self) -> None:
        """The temporary file closed and removed (nothing, once placed)."""
        with self._lock:
            if not self._open:
                return
            self.out.close()
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.fd)
            self._closed()

    def _closed(self) -> None:
        self._open = False
        os.close(self.fd)


async def _made(opening: asyncio.Future[Temp]) -> Temp:
    """The temporary file ``opening`` creates in a thread. If the awaiting task is cancelled
    meanwhile, the thread still creates it: it is awaited (through further cancellations too)
    and discarded before the cancellation goes on, so neither the file nor its descriptor is
    lost."""
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        while not opening.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({opening})
        if not opening.cancelled() and opening.exception() is None:
            closing = asyncio.ensure_future(asyncio.to_thread(opening.result().discard))
            while not closing.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({closing})
        raise


class Tree:
    """The export's folder, written by paths relative to it (``a/b/c``); see the module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _link_found(self, segments: list[str], k: int, cur: int) -> LinkFound:
        where = "/".join(segments[: k + 1])
        return LinkFound(
            errno.ELOOP, f"{where} is a symbolic link: the export writes no file through one"
        )

    @contextlib.contextmanager
    def folder(self, segments: list[str], create: bool = True) -> Iterator[int | None]:
        """The descriptor of the folder ``segments`` below the root (made when missing and
        ``create``, else ``None`` when missing); no link followed."""
        cur = self.fd
        opened: list[int] = []
        try:
            for k, seg in enumerate(segments):
                try:
                    nxt = os.open(seg, FOLDER, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(seg, 0o755, dir_fd=cur)
                    try:
                        nxt = os.open(seg, FOLDER, dir_fd=cur)
                    except OSError as exc:
                        raise self._checked(exc, segments, k, cur) from None
                except OSError as exc:
                    raise self._checked(exc, segments, k, cur) from None
                opened.append(nxt)
                cur = nxt
            yield cur
        finally:
            for fd in opened:
                os.close(fd)

    def _checked(self, exc: OSError, segments: list[str], k: int, cur: int) -> OSError:
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(segments[k], dir_fd=cur, follow_symlinks=False).st_mode):
                return self._link_found(segments, k, cur)
        return exc

    def _kind(self, fd: int, name: str, rel: str) -> int | None:
        """The file type of ``name`` in folder ``fd``; ``None`` when missing; a link refused."""
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            raise LinkFound(
                errno.ELOOP, f"{rel} is a symbolic link: the export writes no file through one"
            )
        return stat.S_IFMT(mode)

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` is a file (blocking)."""
        segments, name = _split(rel)
        with self.folder(segments, create=False) as fd:
            return fd is not None and self._kind(fd, name, rel) == stat.S_IFREG

    def read(self, rel: str, limit: int) -> bytes | None:
        """The bytes of file ``rel`` (at most ``limit``), ``None`` when missing (blocking)."""
        segments, name = _split(rel)
        with self.folder(segments, create=False) as fd:
            if fd is None or self._kind(fd, name, rel) is None:
                return None
            handle = os.open(name, READ, dir_fd=fd)
            with os.fdopen(handle, "rb") as source:
                return source.read(limit)

    def open_temp(self, rel: str) -> Temp:
        """A new temporary file in ``rel``'s folder (made when missing), to be placed at
        ``rel`` or discarded (blocking)."""
        segments, name = _split(rel)
        with self.folder(segments) as fd:
            assert fd is not None
            self._kind(fd, name, rel)  # a link at the name itself refused
            temp = temporary_name(name)
            held = os.dup(fd)
        try:
            out = os.fdopen(os.open(temp, NEW, 0o644, dir_fd=held), "wb")
        except BaseException:
            os.close(held)
            raise
        return Temp(held, temp, name, out)

    @contextlib.contextmanager
    def _new(self, rel: str) -> Iterator[tuple[BinaryIO, Callable[[], None]]]:
        """A temporary file in ``rel``'s folder and the call that puts it in place (flushed to
        the disk first); removed when the block fails (blocking)."""
        temp = self.open_temp(rel)
        try:
            yield temp.out, temp.place
        except BaseException:
            temp.discard()
            raise

    def write(self, rel: str, data: bytes) -> int:
        """``data`` at ``rel``, atomically (blocking: run in a thread); bytes written."""
        with self._new(rel) as (out, place):
            out.write(data)
            place()
        return len(data)

    def replace(self, rel: str, data: bytes) -> int:
        """``data`` at ``rel`` unless the file holds it already; bytes written (blocking)."""
        if self.read(rel, len(data) + 1) == data:
            return 0
        return self.write(rel, data)

    def copy_open(
        self, rel: str, source: BinaryIO, changed: Callable[[], bool] | None = None
    ) -> int:
        """An open file's bytes at ``rel``, atomically (blocking); :class:`Changed` (nothing
        written) when ``changed()`` says the file was written meanwhile."""
        written = 0
        with self._new(rel) as (out, place):
            source.seek(0)
            while chunk := source.read(_COPY_CHUNK):
                out.write(chunk)
                written += len(chunk)
            if changed is not None and changed():
                raise Changed(f"{rel}: its source was written while it was copied")
            place()
        return written

    async def write_stream(self, rel: str, head: bytes, rest: AsyncIterator[bytes]) -> int:
        """A body arriving in chunks at ``rel``, atomically: its temporary file removed if the
        body fails or the task is cancelled, while it is being created too (:func:`_made`).
        Every file-system call is made in a thread, never on the event loop (a slow or network
        disk stalls no other file)."""
        temp = await _made(asyncio.ensure_future(asyncio.to_thread(self.open_temp, rel)))
        written = 0
        try:
            await asyncio.to_thread(temp.write, head)
            written += len(head)
            async for chunk in rest:
                await asyncio.to_thread(temp.write, chunk)
                written += len(chunk)
            await asyncio.to_thread(temp.place)
        except BaseException:
            await asyncio.to_thread(temp.discard)  # after a write still running in its thread
            raise
        return written

    def link(self, existing: str, rel: str) -> None:
        """``rel`` as a hard link to ``existing`` (a copy, atomically, where links fail)."""
        src_segments, src_name = _split(existing)
        segments, name = _split(rel)
        with self.folder(src_segments, create=False) as src_fd, self.folder(segments) as fd:
            assert fd is not None
            if src_fd is None or self._kind(src_fd, src_name, existing) != stat.S_IFREG:
                raise FileNotFoundError(errno.ENOENT, f"{existing} is not there to link to")
            self._kind(fd, name, rel)
            try:
                os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
                return
            except FileExistsError:
                return
            except OSError:  # no hard links here (another filesystem, a limit of links)
                pass
            handle = os.open(src_name, READ, dir_fd=src_fd)
        with os.fdopen(handle, "rb") as source:
            self.copy_open(rel, source)

    def remove(self, rel: str) -> None:
        """File ``rel`` removed, if there (blocking)."""
        segments, name = _split(rel)
        with self.folder(segments, create=False) as fd:
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)

    def remove_entries(self, rel: str, keep: Callable[[str], bool]) -> int:
        """The entries of folder ``rel`` that ``keep`` does not keep removed, folders with all
        they hold (links removed, never followed); how many (blocking)."""
        with self.folder(rel.split("/"), create=False) as fd:
            if fd is None:
                return 0
            count = 0
            for name in os.listdir(fd):
                if keep(name):
                    continue
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    shutil.rmtree(name, dir_fd=fd)
                else:
                    os.unlink(name, dir_fd=fd)
                count += 1
            return count

    def sync_folder(self, rel: str) -> None:
        """Folder ``rel``'s entries flushed to the disk (its renames made durable)."""
        with self.folder(rel.split("/") if rel else []) as fd:
            assert fd is not None
            os.fsync(fd)

    # --- one run at a time --------------------------------------------------------------

    def lock(self) -> int:
        """The folder's lock taken (the descriptor to keep open while the run works);
        :class:`Locked` when another run holds it."""
        segments, name = _split(LOCK)
        with self.folder(segments) as fd:
            assert fd is not None
            self._kind(fd, name, LOCK)
            handle = os.open(
                name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
            )
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(handle, 32, 0).decode(errors="replace").strip() or "?"
            os.close(handle)
            raise Locked(pid) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        return handle

    def swept(self) -> int:
        """Temporary files earlier runs left removed, whatever their marks say (call with the
        lock held: no other run is writing); how many."""
        count = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                if name.startswith(_TEMP_HEAD) and name.endswith(_PART):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, name))
                        count += 1
        return count

    def mark(self) -> None:
        self.write(RUNNING, f"{os.getpid()}\n".encode())

    def unmark(self) -> None:
        with contextlib.suppress(OSError):
            self.remove(RUNNING)
