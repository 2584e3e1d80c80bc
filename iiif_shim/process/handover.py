"""What a supervisor hands a worker without a file on disk: anonymous in-memory files.

The supervisor's settings (secrets resolved) and the last good TLS certificate and key go to
each worker it starts as descriptors of anonymous files (:func:`write`: ``memfd_create``, mode
0600, sealed against any change before they are handed over; Popen's ``pass_fds`` gives them to
that one child, close-on-exec for every other). They have no name in any folder, so nothing is
left on disk whatever ends the supervisor (SIGKILL, the OOM killer), and they are gone when the
last process holding them closes them. The worker reads one (:func:`read`, at most
:data:`MAX_BYTES`, refused when not sealed) or opens it by :func:`path`, then closes it.
Where ``memfd_create`` is missing (not Linux), an unlinked temporary file stands in.

The files are made with ``MFD_NOEXEC_SEAL`` (never executable; what a kernel with
``vm.memfd_noexec=2`` demands, and without which kernels 6.3 to 6.6 log a warning), and without
it on a kernel older than 6.3 that does not know the flag. Where ``memfd_create`` is refused
(``vm.memfd_noexec`` set above what the flags allow, a seccomp profile), :class:`Refused` says
so in one line: workers are not started with settings and keys they cannot check were not
changed (``serve`` with ``server.processes`` above 1 stops; one process needs no handover).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from iiif_shim.base.files import memory_file

MAX_BYTES = 64 << 20  # what one handed file may hold: settings are kilobytes, a PEM chain a few
#: Once sealed, the file can neither be written, grown, shrunk nor unsealed.
_SEALS = sum(getattr(fcntl, f"F_SEAL_{name}", 0) for name in ("WRITE", "GROW", "SHRINK", "SEAL"))
_SEALING = hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")


class Refused(OSError):
    """No sealed in-memory file can be made here; the message says why, in one line."""


def _memfd(name: str) -> int:
    """A new sealable in-memory file, never executable where the kernel knows that flag."""
    try:
        return memory_file(name, sealing=True)
    except OSError as exc:
        raise Refused(
            exc.errno,
            f"cannot hand the settings to worker processes: memfd_create is refused "
            f"({os.strerror(exc.errno) if exc.errno else exc}; the sysctl vm.memfd_noexec or a "
            "seccomp profile): allow it, or run with server.processes: 1",
        ) from None


def write(name: str, data: bytes) -> int:
    """A descriptor (close-on-exec) of an anonymous file holding ``data``, sealed, at offset 0;
    the caller hands it over with ``pass_fds`` and closes it."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"{name}: {len(data)} bytes to hand over, more than {MAX_BYTES}")
    if _SEALING:
        fd = _memfd(name)
    else:  # pragma: no cover - systems without memfd_create
        fd, scratch = tempfile.mkstemp(prefix="iiif-shim-")
        os.unlink(scratch)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if _SEALING:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(fd: int) -> bytes:
    """All of the handed file ``fd`` (left open: the caller closes it). One that is not sealed
    (which anyone holding it could have changed) or larger than :data:`MAX_BYTES` is refused."""
    if _SEALING:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        if seals & _SEALS != _SEALS:
            raise PermissionError(f"descriptor {fd} is not a sealed in-memory file: not read")
    size = os.fstat(fd).st_size
    if size > MAX_BYTES:
        raise ValueError(f"descriptor {fd} holds {size} bytes, more than {MAX_BYTES}")
    parts: list[bytes] = []
    done = 0
    while done < size:
        part = os.pread(fd, size - done, done)
        if not part:
            break
        parts.append(part)
        done += len(part)
    return b"".join(parts)


def path(fd: int) -> Path:
    """A name that opens the handed file ``fd`` anew (its own offset) while ``fd`` is open."""
    own = Path("/proc/self/fd")
    return (own if own.is_dir() else Path("/dev/fd")) / str(fd)


def close(fds: tuple[int, ...]) -> None:
    """Close handed descriptors (those already closed are skipped)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
