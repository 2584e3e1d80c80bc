"""Reading a local file the configuration or a folder names, without ever waiting on it: a pipe,
a socket or a device under the name is refused (``NotARegularFile``) instead of blocking the
thread that reads it, as a pipe nobody writes would forever."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from stat import S_ISREG


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
