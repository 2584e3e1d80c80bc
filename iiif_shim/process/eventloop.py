"""Which event loop runs a server process: uvloop when it is installed, else asyncio's own.

``server.event_loop``: ``auto`` (uvloop if importable, silently asyncio otherwise), ``uvloop``
(required: check-config refuses the file when it is not installed) or ``asyncio``. uvloop is an
optional extra (``pip install 'iiif-shim[fast]'``): a drop-in loop written on libuv whose socket
and protocol handling costs less CPU per request than asyncio's selector loop; nothing in the
shim depends on which loop runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from iiif_shim.config.settings import uvloop_installed

T = TypeVar("T")


def chosen(choice: str) -> str:
    """The loop ``choice`` gives here: ``uvloop`` or ``asyncio``."""
    return (
        "uvloop" if choice == "uvloop" or (choice == "auto" and uvloop_installed()) else "asyncio"
    )


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` gives."""
    if chosen(choice) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
