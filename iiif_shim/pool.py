"""The thread pool for CPU and blocking work (Pillow, file system), with a bound and a timeout.

Pillow releases the GIL while decoding, resizing and encoding, so threads use every core. The
number of jobs queued or running is bounded (``server.max_pending``): past it, new work gets a
503 at once instead of an ever-growing queue. Each job has a deadline (``server.request_timeout``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import Overloaded

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
            raise Overloaded(f"busy: {self._pending} images in progress; retry shortly")
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, fn, *args)
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise Overloaded(f"the image took longer than {self.timeout:g}s to prepare") from None
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
