"""What this machine gives the server: the CPUs this process may run on."""

from __future__ import annotations

import os


def cpus() -> int:
    """CPUs this process may run on (its affinity, as in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
