"""The configuration being served, built into a running service, and swapped whole on reload.

A :class:`Runtime` is one configuration made live: its settings, the public base URL, the image
service (backends, thread pool, caches), the presentation service, the search service (its
index opened on first use, closed before the presentation service it reads objects from), the
health monitor and the access gate (``auth/gate.py``:
its policies and signing keys, opened and closed with the runtime, so a reload brings new ones
at once; what it remembers, logouts and failed logins, is in files that outlive runtimes: the
supervisor's run folder, else one folder :class:`Live` makes for the process and removes at
its end, unless ``auth.state_dir`` names one). :class:`Live` holds the current
one. Each request uses the runtime that was current when it arrived, to its end
(:meth:`Live.use`); a reload (:meth:`Live.reload`, on SIGHUP) builds a new runtime from a file
that passed every check, makes it current, stops the old one's background reads of object
sources and background looks at indexed objects at once (what they found is the old
configuration's; builds a search waits for go on), and closes it once its last
request is done (or its drain deadline passes). Nothing is dropped, and a file with problems
changes nothing. What outlives a runtime: the metrics, the process-wide memory budget, and the
listening socket (so ``server.host``, ``server.port`` and the client connection limits need a
restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from iiif_shim.auth.gate import Gate
from iiif_shim.cache.journal import RUN_DIR_ENV
from iiif_shim.config.settings import Settings
from iiif_shim.core.health import HealthMonitor
from iiif_shim.core.service import ImageService, open_service
from iiif_shim.imaging.budget import MemoryBudget
from iiif_shim.presentation.service import PresentationService, open_presentation
from iiif_shim.search.service import SearchService, open_search
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.upstream.client import Upstream
from iiif_shim.web.baseurl import PublicBase

log = logging.getLogger("iiif_shim")

_RESTART_ONLY = (
    "host",
    "port",
    "max_client_connections",
    "header_timeout",
    "body_timeout",
    "keepalive_timeout",
    "max_request_line",
    "max_header_bytes",
    "max_headers",
    "access_log",
)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        service: ImageService,
        health: HealthMonitor,
        presentation: PresentationService,
        gate: Gate,
        search: SearchService,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.presentation = presentation
        self.search = search
        self.public = PublicBase(
            settings.server.public_url, settings.iiif.prefix, settings.server.trust_forwarded
        )
        self.service = service
        self.health = health
        self.users = 0
        self.retired = False


def _readers(
    upstream: Upstream,
) -> tuple[Callable[[], float], Callable[[], float], Callable[[], float]]:
    """A backend's circuit state, connections in use and requests waiting for one, read at each
    metrics scrape."""
    return (
        (lambda: float(upstream.breaker.state)),
        (lambda: float(upstream.in_use)),
        (lambda: float(upstream.waiting)),
    )


class Live:
    def __init__(self, metrics: Metrics, budget: MemoryBudget) -> None:
        self.metrics = metrics
        self.budget = budget
        self._current: Runtime | None = None
        self._open: dict[int, tuple[Runtime, AsyncExitStack]] = {}  # by id(runtime)
        self._closing: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._run_dir: Path | None = None  # the gates' folder (see the module's text)
        self._own_run_dir = False

    @property
    def current(self) -> Runtime:
        if self._current is None:
            raise RuntimeError("not started")
        return self._current

    async def start(self, settings: Settings) -> None:
        run_dir = os.environ.get(RUN_DIR_ENV)
        if run_dir:
            self._run_dir = Path(run_dir)
        else:  # one process alone: a folder for its life, so a reload forgets no logout
            self._run_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="iiif-shim-"))
            self._own_run_dir = True
        self._current = await self._build(settings)

    async def _build(self, settings: Settings) -> Runtime:
        stack = AsyncExitStack()
        try:
            service = await stack.enter_async_context(
                open_service(settings.service(), self.budget, self.metrics)
            )
            presentation = await stack.enter_async_context(
                open_presentation(
                    settings.presentation,
                    service,
                    self.metrics.cache_lookup,
                    policies=settings.auth.policies,
                )
            )
            search = await stack.enter_async_context(
                open_search(settings.search, presentation, settings.origin)
            )
            gate = await Gate.open(settings.auth, settings.cache, self._run_dir)
            stack.push_async_callback(gate.close)
            health = HealthMonitor(service, settings.server.health_interval)
            health.start()
            stack.push_async_callback(health.stop)
        except BaseException:
            await stack.aclose()
            raise
        runtime = Runtime(settings, service, health, presentation, gate, search)
        self._open[id(runtime)] = (runtime, stack)
        self.budget.resize(settings.server.memory_budget, settings.server.memory_wait)
        for name, backend in service.backends.items():
            if backend.client is not None:
                self.metrics.watch_backend(name, *_readers(backend.client))
        return runtime

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Runtime]:
        """The current runtime, kept open until the caller is done with it."""
        runtime = self.current
        runtime.users += 1
        try:
            yield runtime
        finally:
            runtime.users -= 1
            if runtime.retired and runtime.users == 0:
                self._close_soon(runtime)

    async def reload(self, settings: Settings) -> list[str]:
        """Serve ``settings`` from now on; returns notes on what needs a restart instead."""
        async with self._lock:
            old = self.current
            new = await self._build(settings)
            self._current = new
            # the old configuration's background reads stop now, not when it closes: a read
            # ending later would publish its sources' state over the new configuration's
            await old.presentation.watch.stop()
            old.search.stop_background()
            for name in set(old.service.backends) - set(new.service.backends):
                self.metrics.forget_backend(name)
            for name in set(old.presentation.sources) - set(new.presentation.sources):
                self.metrics.forget_source(name)
            old.retired = True
            if old.users == 0:
                self._close_soon(old)
            else:  # requests still in flight finish on it, then it closes (within a deadline)
                deadline = old.settings.server.request_timeout + 5
                asyncio.get_running_loop().call_later(deadline, self._close_soon, old)
        before, after = old.settings.server, settings.server
        return [
            f"server.{key} changed; it takes effect at the next restart"
            for key in _RESTART_ONLY
            if getattr(before, key) != getattr(after, key)
        ]

    def _close_soon(self, runtime: Runtime) -> None:
        entry = self._open.pop(id(runtime), None)
        if entry is None:  # closed already
            return
        task = asyncio.get_running_loop().create_task(self._close(entry[1]))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(stack: AsyncExitStack) -> None:
        try:
            await stack.aclose()
        except Exception:
            log.exception("closing the previous configuration failed")

    async def close(self) -> None:
        """Close every runtime still open: the current one and any still draining."""
        for runtime, _ in list(self._open.values()):
            runtime.retired = True
            self._close_soon(runtime)
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_run_dir and self._run_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._run_dir, True)
