"""What lives on the application and on each request: the app keys (the live configuration, the
metrics, which process of the server this is), the request's runtime (held for its whole life
by the request middleware) and what the request turned out to be, for metrics."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.web.runtime import Live, Runtime


@dataclass(frozen=True)
class ProcessInfo:
    """Which process serves: its pid, its worker slot (0 to processes - 1) and how many serve
    (with ``server.processes`` above 1, each answer belongs to one worker)."""

    pid: int
    worker: int = 0
    processes: int = 1

    def as_json(self) -> dict[str, int]:
        return {"pid": self.pid, "worker": self.worker, "processes": self.processes}


LIVE = web.AppKey("live", Live)
METRICS = web.AppKey("metrics", Metrics)
PROCESS = web.AppKey("process", ProcessInfo)


@dataclass
class Observed:
    """What a request turned out to be, filled in as the handler learns it (for metrics)."""

    endpoint: str = "other"  # info, image, base, landing, health, metrics, auth, probe, other
    version: str = "-"
    backend: str = "-"


RUNTIME = web.RequestKey("runtime", Runtime)  # the request's (set by the request middleware)
OBSERVED = web.RequestKey("observed", Observed)  # what the request was, for metrics
REQUEST_ID = web.RequestKey("request_id", str)  # as logged and sent upstream (X-Request-ID)


def runtime_of(request: web.Request) -> Runtime:
    runtime: Runtime = request[RUNTIME]
    return runtime


def observed(request: web.Request) -> Observed:
    found: Observed = request[OBSERVED]
    return found
