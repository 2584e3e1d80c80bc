"""The thread pool for CPU and blocking work (Pillow, file system), with a bound and a timeout.

Pillow releases the GIL while decoding, resizing and encoding, so threads use every core. The
number of jobs queued or running is bounded (``server.max_pending``): past it, new work gets a
503 at once instead of an ever-growing queue. Each job has a deadline (``server.request_timeout``):
past it the request gets a 503, but the job still counts as pending, and the memory it reserved
(``budget.holding``) stays reserved, until its thread really ends, because a thread cannot be
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from iiif_shim.base.errors import QueueFull, RenderTimeout
from iiif_shim.imaging.budget import Reservation, holding

T = TypeVar("T")


class Workers:
    def __init__(self, threads: int, max_pending: int, timeout: float) -> None:
        self.threads = threads or (os.cpu_count() or 2)
        self.max_pending = max_pending
        self.timeout = timeout
        self._pending = 0
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="iiif-shim")

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pending >= self.max_pending:
            raise QueueFull(f"busy: {self._pending} images in progress; retry shortly")
        loop = asyncio.get_running_loop()
        hold = holding.get()
        job = self._executor.submit(fn, *args)
        self._pending += 1
        if hold is not None:
            hold.retain()

        def finished(_: Future[T]) -> None:  # in the worker thread: hand back to the loop
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to count
                loop.call_soon_threadsafe(self._finished, hold)

        job.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job), self.timeout)
        except TimeoutError:
            raise RenderTimeout(
                f"the image took longer than {self.timeout:g}s to prepare"
            ) from None

    def _finished(self, hold: Reservation | None) -> None:
        self._pending -= 1
        if hold is not None:
            hold.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
