"""What this machine gives the server: the CPUs this process may run on, and the memory it may
really use (its cgroup's limit, else the physical memory), from which the default memory budget
is derived (:data:`BUDGET_FRACTION`)."""

from __future__ import annotations

import os
from pathlib import Path

# The part of the usable memory the default ``server.memory_budget`` takes for decoded pixels;
# the rest is for the caches, the interpreter, libraries and the upstream bodies in flight.
BUDGET_FRACTION = 0.5

_CGROUP = Path("/sys/fs/cgroup")


def cpus() -> int:
    """CPUs this process may run on (its affinity, as in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def physical_memory() -> int | None:
    """Bytes of physical memory (``None`` where the system does not say)."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _limit(file: Path) -> int | None:
    """A cgroup memory limit file's bytes; ``None`` for none (``max``) or no such file."""
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP
) -> int | None:
    """The tightest memory limit of this process's cgroup and its parents (v2 ``memory.max``,
    v1 ``memory.limit_in_bytes``), ``None`` when there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):  # v1: the memory controller's hierarchy
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:  # the limit of every ancestor holds too (a container sees only its own)
            limit = _limit(folder / name)
            if limit is not None:
                found.append(limit)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(found) if found else None


def usable_memory() -> int | None:
    """Bytes this process may really use: its cgroup's limit when there is one under the
    physical memory, else the physical memory (``None`` when neither can be read)."""
    physical = physical_memory()
    limit = cgroup_memory()
    if limit is not None and (physical is None or limit < physical):
        return limit
    return physical


def default_memory_budget() -> int:
    """The whole server's decoded-pixel budget when ``server.memory_budget`` is 0:
    :data:`BUDGET_FRACTION` of :func:`usable_memory`, at least 16 MiB (1 GiB where the memory
    cannot be read)."""
    usable = usable_memory()
    if usable is None:
        return 1 << 30
    return max(16 << 20, int(usable * BUDGET_FRACTION))
