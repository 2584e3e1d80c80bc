"""Prometheus metrics, one registry per app (never the library's process-wide default).

What ops watch: requests by endpoint, status, API version and backend, and their latency;
cache lookups per tier (facts, image, decoded, tile, disk, redis) by hit or miss; cache
entries rejected (by tier and reason: damaged, misplaced, not a file, contradicted, ...); failed
Redis calls; Pillow work by step; backend calls by outcome (``ok`` or the failure kind:
``refused``, ``timeout``, ``not_image``, ...) and their latency; each backend's circuit state,
connections in use and requests waiting for one; PDF pages written and PDF builds by outcome;
objects indexed for search, their pages read and their text files refused;
the image job queue, decoded bytes reserved and waiters for memory; client connections and why
some were refused; TLS handshakes that failed and when the certificate served expires (with
``server.tls`` only); how many processes serve; each object source's state from its last
background read (up or not, objects, what was left out by kind). ``GET /metrics`` serves
:meth:`Metrics.render`.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the supervisor sets it for its workers) the values live in
files there, one per process, and :meth:`Metrics.render` sums every worker's: counters and
histograms survive a worker's restart; gauges are the live workers' sum (the circuit state:
their maximum). Gauges read from a function cannot be shared that way, so each worker copies
them into its values every second (:meth:`Metrics.refresh`) and before answering a scrape.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("iiif_shim")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when imported

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STEP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
SOURCE_SKIPPED = ("cells", "rows", "columns", "objects")  # kinds of iiif_shim_source_skipped


class Metrics:
    def __init__(self) -> None:
        self.folder = os.environ.get(MULTIPROCESS_ENV) or None
        self._readers: dict[tuple[str, str], tuple[Gauge, Callable[[], float]]] = {}
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
        self._rejected = Counter(
            "iiif_shim_cache_rejected",
            "cache entries found but not used, by tier and reason (damaged, misplaced, "
            "not_a_file, oversize, unreadable, unusable, contradicted): each was a miss",
            ["tier", "reason"],
            registry=r,
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
            multiprocess_mode="livemax",
        )
        self._in_use = Gauge(
            "iiif_shim_backend_connections_in_use",
            "connections to a backend in use",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._waiting = Gauge(
            "iiif_shim_backend_connections_waiting",
            "requests waiting for a connection to a backend",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._pdf_pages = Counter(
            "iiif_shim_pdf_pages", "pages written into PDFs being built", registry=r
        )
        self._pdf_builds = Counter(
            "iiif_shim_pdf_builds",
            "PDF builds by outcome: built, abandoned (every client left), busy (no turn in time), "
            "failed",
            ["outcome"],
            registry=r,
        )
        self._search_indexed = Counter(
            "iiif_shim_search_indexed",
            "search indexing: objects built or looked at again with a change, pages read and "
            "stored, text files refused",
            ["what"],
            registry=r,
        )
        self._refused = Counter(
            "iiif_shim_client_connections_refused",
            "client connections closed by the server's limits",
            ["reason"],
            registry=r,
        )
        self._handshake_failures = Counter(
            "iiif_shim_tls_handshake_failures",
            "TLS handshakes that failed or timed out (clients that do not trust the certificate, "
            "scanners, clients that connect and say nothing)",
            registry=r,
        )
        self._expiry: Gauge | None = None  # made when a certificate is served (0 would alarm)
        self._redis_errors = Counter(
            "iiif_shim_redis_errors",
            "failed Redis calls of the shared cache tier, by operation (Redis is then skipped "
            "for cache.redis_retry seconds)",
            ["operation"],
            registry=r,
        )
        self._source_up = Gauge(
            "iiif_shim_source_up",
            "object source readable at its last background read (1), or down (0)",
            ["source"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._source_objects = Gauge(
            "iiif_shim_source_objects",
            "objects an object source had at its last background read",
            ["source"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._source_skipped = Gauge(
            "iiif_shim_source_skipped",
            "what the last background read of an object source left out, by kind: cells "
            "(values), rows (canvases without their image), columns (optional ones missing), "
            "objects (no usable canvas: not served)",
            ["source", "kind"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._gauges: dict[str, Gauge] = {}
        for name, doc in (
            ("image_jobs", "image jobs queued or running in the thread pool"),
            ("decoded_bytes_reserved", "bytes of image memory reserved by requests"),
            ("memory_waiters", "requests waiting for image memory"),
            ("client_connections", "open client connections"),
        ):
            self._gauges[name] = Gauge(
                f"iiif_shim_{name}", doc, registry=r, multiprocess_mode="livesum"
            )
        Gauge(
            "iiif_shim_processes",
            "processes serving the port (draining ones included)",
            registry=r,
            multiprocess_mode="livesum",
        ).set(1)

    @property
    def multiprocess(self) -> bool:
        return self.folder is not None

    def request(
        self, endpoint: str, version: str, backend: str, status: int, seconds: float
    ) -> None:
        self._requests.labels(endpoint, version, backend, str(status)).inc()
        self._latency.labels(endpoint, version).observe(seconds)

    def cache_lookup(self, tier: str, hit: bool) -> None:
        self._cache.labels(tier, "hit" if hit else "miss").inc()

    def cache_rejected(self, tier: str, reason: str) -> None:
        self._rejected.labels(tier, reason).inc()

    def redis_error(self, operation: str) -> None:
        self._redis_errors.labels(operation).inc()

    def pillow_step(self, step: str, seconds: float) -> None:
        self._pillow.labels(step).observe(seconds)

    def backend_call(self, backend: str, outcome: str, seconds: float) -> None:
        self._backend_calls.labels(backend, outcome).inc()
        self._backend_latency.labels(backend).observe(seconds)

    def pdf_page(self) -> None:
        self._pdf_pages.inc()

    def pdf_build(self, outcome: str) -> None:
        self._pdf_builds.labels(outcome).inc()

    def search_indexed(self, pages: int, refused: int) -> None:
        """An object indexed (built, or looked at again and changed)."""
        self._search_indexed.labels("objects").inc()
        self._search_indexed.labels("pages").inc(pages)
        self._search_indexed.labels("refused").inc(refused)

    def source_state(self, source: str, up: bool, objects: int, skipped: Mapping[str, int]) -> None:
        """An object source's state after a background read (``skipped``: by SOURCE_SKIPPED)."""
        self._source_up.labels(source).set(1 if up else 0)
        self._source_objects.labels(source).set(objects)
        for kind, count in skipped.items():
            self._source_skipped.labels(source, kind).set(count)

    def forget_source(self, source: str) -> None:
        """An object source no longer configured (after a reload): its gauges removed. (With
        several processes, the values a process wrote to its file stay until it exits.)"""
        for gauge in (self._source_up, self._source_objects):
            with contextlib.suppress(KeyError):
                gauge.remove(source)
        for kind in SOURCE_SKIPPED:
            with contextlib.suppress(KeyError):
                self._source_skipped.remove(source, kind)

    def client_refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    def tls_handshake_failed(self) -> None:
        self._handshake_failures.inc()

    def tls_certificate(self, not_after: float) -> None:
        """The certificate served expires at ``not_after`` (Unix time; several processes: the
        soonest of the live ones)."""
        if self._expiry is None:
            self._expiry = Gauge(
                "iiif_shim_tls_certificate_expiry_timestamp_seconds",
                "when the certificate served to new connections expires (Unix time)",
                registry=self.registry,
                multiprocess_mode="livemin",
            )
        self._expiry.set(not_after)

    def watch_backend(
        self,
        backend: str,
        circuit: Callable[[], float],
        in_use: Callable[[], float],
        waiting: Callable[[], float],
    ) -> None:
        """Read a backend's circuit state, connections in use and requests waiting for one at
        each scrape (replacing the readers of an earlier configuration's backend of that name)."""
        self._read(("circuit", backend), self._circuit.labels(backend), circuit)
        self._read(("in_use", backend), self._in_use.labels(backend), in_use)
        self._read(("waiting", backend), self._waiting.labels(backend), waiting)

    def forget_backend(self, backend: str) -> None:
        gauges = (("circuit", self._circuit), ("in_use", self._in_use), ("waiting", self._waiting))
        for key, gauge in gauges:
            if self._readers.pop((key, backend), None) is not None:
                gauge.labels(backend).set(0)  # its value in this process's file stays
            with contextlib.suppress(KeyError):
                gauge.remove(backend)

    def watch(self, name: str, read: Callable[[], float]) -> None:
        """Read gauge ``name`` (see ``__init__``) from ``read`` at each scrape."""
        self._read(("gauge", name), self._gauges[name], read)

    def _read(self, key: tuple[str, str], gauge: Gauge, read: Callable[[], float]) -> None:
        if self.multiprocess:
            self._readers[key] = (gauge, read)
        else:
            gauge.set_function(read)

    def refresh(self) -> None:
        """Multiprocess mode: copy every watched reading into this process's values."""
        for key, (gauge, read) in list(self._readers.items()):
            try:
                gauge.set(read())
            except Exception:  # a reader of a runtime being replaced; the next one will do
                log.debug("metrics: reading %s failed", key, exc_info=True)

    def render(self) -> tuple[bytes, str]:
        if self.folder is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.refresh()
        every = CollectorRegistry()  # built per scrape, as prometheus_client advises
        MultiProcessCollector(every, self.folder)  # type: ignore[no-untyped-call]
        return generate_latest(every), CONTENT_TYPE_LATEST
