"""Local files: the open flags of files and folders the shim reads or writes below a folder of
its own (:data:`FOLDER`, :data:`READ`, :data:`NEW`, :data:`APPEND`: never through a link,
never waiting on a pipe, never inherited by a child), reading one the configuration or a
folder names without ever waiting on it (a pipe, a socket or a device under the name is
refused, ``NotARegularFile``, instead of blocking the thread that reads it, as a pipe nobody
writes would forever), and making an anonymous file in memory (:func:`memory_file`, the one
place that knows ``memfd_create``'s flags)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from stat import S_ISREG

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC  # a folder, never a link
READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC  # a file, never a link or a wait
NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC  # a file made here
APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | _CLOEXEC  # a journal


class NotARegularFile(OSError):
    """The name is a pipe, a socket or a device, not a file."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.EINVAL, "not a regular file", str(path))


def read_head(path: str | Path, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of the regular file at ``path`` (links are
    followed: callers check where they lead); OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(path)
        return f.read(limit)


#: Linux 6.3's flag (Python 3.11 has no name for it): never executable.
MFD_NOEXEC_SEAL = getattr(os, "MFD_NOEXEC_SEAL", 0x0008)


def memory_file(name: str, *, sealing: bool = False) -> int:
    """A descriptor (close-on-exec) of a new anonymous file in memory (``memfd_create``),
    ``sealing`` allowed or not, never executable where the kernel knows that flag (what
    ``vm.memfd_noexec=2`` demands; kernels 6.3 to 6.6 log a warning without it) and without it
    on an older kernel that answers EINVAL. OSError when it cannot be made (refused by the
    sysctl or a seccomp profile); AttributeError where the system has no memfd_create."""
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealing else 0)
    try:
        return os.memfd_create(f"iiif-shim-{name}", flags | MFD_NOEXEC_SEAL)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a kernel before 6.3, without the flag
            raise
        return os.memfd_create(f"iiif-shim-{name}", flags)
