"""Prometheus metrics, one registry per app (never the library's process-wide default).

What ops watch: requests by endpoint, status, API version and backend, and their latency;
cache lookups per tier (facts, image, decoded, tile) by hit or miss; Pillow work by step;
backend calls by outcome (``ok`` or the failure kind: ``refused``, ``timeout``, ``not_image``,
...) and their latency; each backend's circuit state and connections in use; the image job
queue, decoded bytes reserved and waiters for memory; client connections and why some were
refused. ``GET /metrics`` serves :meth:`Metrics.render`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STEP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._requests = Counter(
            "iiif_shim_requests",
            "HTTP requests answered",
            ["endpoint", "version", "backend", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "iiif_shim_request_seconds",
            "time to answer a request",
            ["endpoint", "version"],
            buckets=_LATENCY,
            registry=r,
        )
        self._cache = Counter(
            "iiif_shim_cache_lookups", "cache lookups", ["tier", "result"], registry=r
        )
        self._pillow = Histogram(
            "iiif_shim_pillow_seconds", "Pillow work by step", ["step"], buckets=_STEP, registry=r
        )
        self._backend_calls = Counter(
            "iiif_shim_backend_requests",
            "requests to backends by outcome (ok, or the kind of failure)",
            ["backend", "outcome"],
            registry=r,
        )
        self._backend_latency = Histogram(
            "iiif_shim_backend_seconds",
            "time for a backend request",
            ["backend"],
            buckets=_LATENCY,
            registry=r,
        )
        self._circuit = Gauge(
            "iiif_shim_backend_circuit_state",
            "circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            ["backend"],
            registry=r,
        )
        self._in_use = Gauge(
            "iiif_shim_backend_connections_in_use",
            "connections to a backend in use",
            ["backend"],
            registry=r,
        )
        self._refused = Counter(
            "iiif_shim_client_connections_refused",
            "client connections closed by the server's limits",
            ["reason"],
            registry=r,
        )
        self._gauges: dict[str, Gauge] = {}
        for name, doc in (
            ("image_jobs", "image jobs queued or running in the thread pool"),
            ("decoded_bytes_reserved", "bytes of decoded pixels reserved by requests"),
            ("memory_waiters", "requests waiting for decoded-pixel memory"),
            ("client_connections", "open client connections"),
        ):
            self._gauges[name] = Gauge(f"iiif_shim_{name}", doc, registry=r)

    def request(
        self, endpoint: str, version: str, backend: str, status: int, seconds: float
    ) -> None:
        self._requests.labels(endpoint, version, backend, str(status)).inc()
        self._latency.labels(endpoint, version).observe(seconds)

    def cache_lookup(self, tier: str, hit: bool) -> None:
        self._cache.labels(tier, "hit" if hit else "miss").inc()

    def pillow_step(self, step: str, seconds: float) -> None:
        self._pillow.labels(step).observe(seconds)

    def backend_call(self, backend: str, outcome: str, seconds: float) -> None:
        self._backend_calls.labels(backend, outcome).inc()
        self._backend_latency.labels(backend).observe(seconds)

    def client_refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    def watch_backend(
        self, backend: str, circuit: Callable[[], float], in_use: Callable[[], float]
    ) -> None:
        """Read a backend's circuit state and connections at each scrape (replacing the
        readers of an earlier configuration's backend of that name)."""
        self._circuit.labels(backend).set_function(circuit)
        self._in_use.labels(backend).set_function(in_use)

    def forget_backend(self, backend: str) -> None:
        for gauge in (self._circuit, self._in_use):
            with contextlib.suppress(KeyError):
                gauge.remove(backend)

    def watch(self, name: str, read: Callable[[], float]) -> None:
        """Read gauge ``name`` (see ``__init__``) from ``read`` at each scrape."""
        self._gauges[name].set_function(read)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
