"""One process-wide budget of image memory, shared by every request.

Before a request fetches, decodes or renders anything it reserves what its plan will really
take (``imaging.cost``: the source at the reduction it is decoded at, then the most any later
step holds beside it, per engine; plus what the backend's answer may hold in memory,
``Backend.body_bytes``). Reservations that do not fit wait in
line (first come, first served) for at most ``wait`` seconds, then get 503 with
``Retry-After``; one that could never fit is refused at once (501). A reservation is released
only when the request *and* every thread it started are done: a render that outlives its
request (timed out, client gone) keeps its bytes counted until its thread ends.

:func:`unmap_large_blocks` makes freed image memory go back to the system at once, so what the
budget no longer counts is not kept resident either.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import math
import os
import sys
from contextvars import ContextVar

from iiif_shim.base.errors import MemoryBusy, OverBudget

_MB = 1024 * 1024

# The reservation of the request being served; the thread pool retains it for each job.
holding: ContextVar[Reservation | None] = ContextVar("holding", default=None)


class Reservation:
    """Bytes held in a :class:`MemoryBudget` until the last of its holders lets go."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self.budget = budget
        self.nbytes = nbytes
        self._holders = 1  # the request itself

    def retain(self) -> None:
        """One more holder (a thread about to run for this request)."""
        self._holders += 1

    def release(self) -> None:
        """A holder is done; the bytes go back when the last one is (call on the loop)."""
        self._holders -= 1
        if self._holders == 0:
            self.budget._give_back(self.nbytes)


class MemoryBudget:
    def __init__(self, total: int, wait: float) -> None:
        self.total = total
        self.wait = wait
        self.reserved = 0
        self._line: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    async def reserve(self, nbytes: int) -> Reservation:
        if nbytes > self.total:
            raise OverBudget(
                f"this image needs about {math.ceil(nbytes / _MB)} MB of image memory, more "
                f"than the memory budget of {self.total // _MB} MB each server process has "
                "(server.memory_budget, shared by server.processes)",
            )
        if not self._line and self.reserved + nbytes <= self.total:
            self.reserved += nbytes
            return Reservation(self, nbytes)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, turn)
        self._line.append(entry)
        try:
            async with asyncio.timeout(self.wait):
                await turn
        except TimeoutError:
            if turn.done() and not turn.cancelled():  # granted in the same pass as it expired
                self._give_back(nbytes)
            raise MemoryBusy(
                f"busy: the memory for decoding images stayed in use for {self.wait:g}s",
                retry_after=max(1, math.ceil(self.wait / 2)),
            ) from None
        except BaseException:
            if turn.done() and not turn.cancelled():  # granted just as it was given up
                self._give_back(nbytes)
            raise
        finally:
            if entry in self._line:
                self._line.remove(entry)
                self._admit()  # those behind it may fit now
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        self.reserved -= nbytes
        self._admit()

    def _admit(self) -> None:
        while self._line:
            nbytes, turn = self._line[0]
            if turn.done():  # gave up waiting
                self._line.popleft()
                continue
            if self.reserved + nbytes > self.total:
                return
            self._line.popleft()
            self.reserved += nbytes
            turn.set_result(None)

    def resize(self, total: int, wait: float) -> None:
        """New limits (a configuration reload); reservations already made stay counted."""
        self.total, self.wait = total, wait
        self._admit()


def unmap_large_blocks() -> None:
    """Give freed image memory back to the system at once (glibc only).

    glibc serves a large allocation from its heaps once a block of that size has been freed (its
    mmap threshold grows up to 32 MB) and keeps what is freed there, per thread: decoded images
    then stay resident after their reservation is released, and a process under load grew to
    1.4x its budget (bench/huge.py). A fixed threshold maps every block of 1 MiB or more on its
    own and unmaps it when freed. An operator's ``MALLOC_MMAP_THRESHOLD_`` is left alone.
    Process-wide: called once by a server process at start (``server.serve``)."""
    if sys.platform != "linux" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
