"""The shim's application served inside the test process, for tests of what handlers answer.

:class:`InProcessShim` builds the application from a config file exactly as a server process
does (``config.settings.load_settings``, ``web.app.create_app``) and serves it with aiohttp's
``TestServer`` on 127.0.0.1, on an event loop of its own in a thread, so a synchronous test
talks to it over a real socket with the same client as to a server process
(``tests.support.request``). What it leaves out is what a server process adds around the app:
the connection guard, signals, several processes, the access log. Tests of those start the real
command (``tests.support.start_shim``); everything else starts in milliseconds here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestServer

from iiif_shim.config.settings import load_settings
from iiif_shim.web.app import create_app
from tests.support import Response, request

T = TypeVar("T")


class InProcessShim:
    def __init__(self, config: Path) -> None:
        self.settings = load_settings(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = TestServer(create_app(self.settings), host="127.0.0.1")
        self._run(self.server.start_server())
        assert self.server.port is not None
        self.port: int = self.server.port

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def get(self, path: str, **kwargs: Any) -> Response:
        return request(self.port, path, **kwargs)

    def stop(self) -> None:
        try:
            self._run(self.server.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
