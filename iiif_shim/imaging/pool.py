"""The thread pool for CPU and blocking work (Pillow, file system), with a bound and a timeout,
and admission by kind of request: lanes in the pool, and gates in front of whole jobs.

Pillow releases the GIL while decoding, resizing and encoding, so threads use every core. Each
job is counted in the lane of the request it serves (``base/lanes.py``): ``images`` (the Image
API; the default), ``documents`` (manifests, collections and object pages: records and image
facts) and ``pdfs`` (the pages of PDFs). The jobs queued or running in each lane are bounded
on their own (``server.max_pending`` each): past it, new work of that
kind gets a 503 at once instead of an ever-growing queue, and work of the other kinds goes on,
so building manifests or PDFs can never fill the queue images need. Each job has a deadline
(``server.request_timeout``): past it the request gets a 503, but the job still counts as
pending, and the memory it reserved (``budget.holding``) stays reserved, until its thread
really ends, because a thread cannot be stopped.

A :class:`Gate` admits at most ``slots`` holders at once; the others wait in line (first come,
first served), at most ``line`` of them and each for at most ``wait`` seconds, then get 503 with
``Retry-After``. The presentation service puts every PDF it builds through one, and the image
facts that documents look up through another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from iiif_shim.base.errors import QueueFull, RenderTimeout
from iiif_shim.base.lanes import Lane, lane
from iiif_shim.imaging.budget import Reservation, holding

T = TypeVar("T")


# how a full lane's 503 names what is in progress
_IN_PROGRESS = {
    Lane.IMAGES: "images",
    Lane.DOCUMENTS: "jobs of manifests, collections and object pages",
    Lane.PDFS: "PDF pages",
}


class Workers:
    def __init__(self, threads: int, max_pending: int, timeout: float) -> None:
        self.threads = threads or (os.cpu_count() or 2)
        self.max_pending = max_pending  # per lane
        self.timeout = timeout
        self._pending = dict.fromkeys(Lane, 0)
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="iiif-shim")

    @property
    def pending(self) -> int:
        """Jobs queued or running, of every lane."""
        return sum(self._pending.values())

    def pending_in(self, kind: Lane) -> int:
        return self._pending[kind]

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        kind = lane.get()
        if self._pending[kind] >= self.max_pending:
            raise QueueFull(
                f"busy: {self._pending[kind]} {_IN_PROGRESS[kind]} in progress; retry shortly"
            )
        loop = asyncio.get_running_loop()
        hold = holding.get()
        job = self._executor.submit(fn, *args)
        self._pending[kind] += 1
        if hold is not None:
            hold.retain()

        def finished(_: Future[T]) -> None:  # in the worker thread: hand back to the loop
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to count
                loop.call_soon_threadsafe(self._finished, kind, hold)

        job.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job), self.timeout)
        except TimeoutError:
            raise RenderTimeout(
                f"the image took longer than {self.timeout:g}s to prepare"
            ) from None

    def _finished(self, kind: Lane, hold: Reservation | None) -> None:
        self._pending[kind] -= 1
        if hold is not None:
            hold.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Gate:
    """At most ``slots`` holders at once; the rest wait in line, first come first served, at
    most ``line`` of them and each at most ``wait`` seconds; then 503 (``QueueFull``) with
    ``Retry-After``. ``what`` names the holders in that answer ("PDFs being made")."""

    def __init__(self, slots: int, wait: float, line: int, what: str) -> None:
        self.slots = max(1, slots)
        self.wait = wait
        self.line = line
        self.what = what
        self.holders = 0
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def full(self) -> bool:
        """Whether a newcomer would be refused now: every slot held and the line full."""
        return self.holders >= self.slots and len(self._line) >= self.line

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """The block runs holding a slot (after waiting in line for one, if need be)."""
        await self._enter()
        try:
            yield
        finally:
            self._leave()

    def check(self) -> None:
        """503 (``QueueFull``) at once if a newcomer would be refused now (every slot held and
        the line full): for callers with work to do before they would ask."""
        if self.full:
            raise self._busy("the line is full")

    def _busy(self, why: str) -> QueueFull:
        return QueueFull(
            f"busy: {self.holders} {self.what} and {len(self._line)} waiting ({why}); "
            "retry in a while",
            retry_after=max(1, math.ceil(self.wait / 2)),
        )

    async def _enter(self) -> None:
        if not self._line and self.holders < self.slots:
            self.holders += 1
            return
        if len(self._line) >= self.line:
            raise self._busy("the line is full")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            async with asyncio.timeout(self.wait):
                await turn
        except TimeoutError:
            if turn.done() and not turn.cancelled():  # granted in the same pass as it expired
                self._leave()
            raise self._busy(f"none was free within {self.wait:g}s") from None
        except BaseException:
            if turn.done() and not turn.cancelled():  # granted just as it was given up
                self._leave()
            raise
        finally:
            if turn in self._line:
                self._line.remove(turn)

    def _leave(self) -> None:
        self.holders -= 1
        while self._line and self.holders < self.slots:
            turn = self._line.popleft()
            if turn.done():  # gave up waiting
                continue
            self.holders += 1
            turn.set_result(None)
