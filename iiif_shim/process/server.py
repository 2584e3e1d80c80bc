"""Running the app: the listening socket, signals, the access log, and the operator's mistakes.

:func:`serve` binds ``server.host:port`` (a port in use, an address the machine does not have or
a name that does not resolve is one line on stderr and exit status 1, and nothing claims the
server is up until it is), raises the open-file limit to its hard maximum, and puts the
connection guard (``web/connections.py``) in front of aiohttp with limits below that file limit.
With ``server.tls`` the port serves HTTPS with the certificates of ``tls.py`` (loaded before it
listens, watched for renewals while it serves), the connection guard doing each handshake
(within ``server.header_timeout``, counted against the connection cap from accept: one path for
one process and for workers), and ``server.http_redirect_port`` is a second socket answered by
``tls.Redirect`` (308s, and ACME challenges from ``server.tls.acme_dir``), behind a guard of its
own (a share of the connection cap: :func:`redirect_cap`).
Signals (handled from the start, before the app is set up):

- SIGTERM / SIGINT: stop accepting, close idle connections, let requests in flight finish within
  ``server.shutdown_timeout``, release everything, exit 0. Once draining, a process ignores
  SIGTERM, SIGINT and SIGHUP until it is done (or its deadline, below): a second signal (a
  shutdown during a reload, ``pkill``) never cuts its requests short;
- SIGHUP: read the configuration again (``app.reload``): a file that passes every check takes
  effect without dropping a request; one that does not is logged and changes nothing. Then,
  serving TLS, the certificate files are read again (new handshakes get them).

A process that has not exited ``server.shutdown_timeout`` + 5 s after it began to stop (a thread
stuck in a read keeps asyncio and the interpreter waiting for it) logs so and exits with status
1 by itself: a signal it ignores while it drains never leaves it for SIGKILL alone to stop.

The access log is ``combined`` (Apache's, plus the request id and the seconds taken), its quoted
fields escaped as Apache escapes them (``\\"``, ``\\\\``, ``\\xhh`` for control characters and
bytes past ASCII) so that no client can forge a line or a field, or ``json`` (one object a
line), on stdout.

As a worker of a supervisor (``supervisor.py``, ``server.processes`` above 1) it binds nothing
and reads no configuration file: it serves the configuration the supervisor hands it, on the
inherited listening sockets (the redirect port's too), with certificates it reads and watches
itself (or, when the files went bad since the supervisor checked them, the last good pair the
supervisor handed it in memory), says ``ready`` on its channel once it accepts, drains
and exits on SIGTERM or when the channel closes (the supervisor is gone), ignores SIGHUP (the
supervisor reloads, by replacing it), and refreshes its gauges for the metrics shared by every
worker. It accepts with its own loop (:class:`Listener`; asyncio's and uvloop's take every
connection waiting, so connections opened together went to whichever worker woke first): one
connection each time the socket wakes it, and none while another worker holds fewer connections
(the connection board, ``board.py``, where it posts its own count, :class:`Holdings`). It starts
with SIGTERM, SIGINT and SIGHUP blocked by the supervisor and unblocks them once its handlers
are in place.
Draining, it takes the connections already queued on the socket, as many as its connection guard
has room for (so the last worker to close its copy resets none it could serve, and on a reload
leaves the rest to the workers that serve on), stops accepting, and gives the connections it
has just accepted half a second to send their request: aiohttp's cleanup closes every connection
without a request in progress, and a client whose connection was accepted a moment before would
otherwise see it closed unanswered while the other workers serve on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from iiif_shim import __version__
from iiif_shim.config.settings import Settings
from iiif_shim.imaging.budget import unmap_large_blocks
from iiif_shim.process import board, eventloop, handover
from iiif_shim.process.board import Board, Seat
from iiif_shim.process.supervisor import (
    HELD_SIGNALS,
    KILL_GRACE,
    WorkerRole,
    bind,
    listen_problem,
    resolve_processes,
)
from iiif_shim.process.tls import CertificateError, Certificates, Redirect, handshake_failed, kept
from iiif_shim.telemetry.metrics import Metrics
from iiif_shim.web.app import Loader, create_app, reload
from iiif_shim.web.connections import ClientLimits, ConnectionGuard, TLSGate, handler_factory
from iiif_shim.web.ops import TLS_STATUS
from iiif_shim.web.state import LIVE, METRICS, REQUEST_ID, ProcessInfo

log = logging.getLogger("iiif_shim")
access_log = logging.getLogger("iiif_shim.access")

_FD_RESERVE = 64  # descriptors kept for log files, the config, masters being read, ...
BACKLOG = 1024
SETTLE = 0.5  # seconds a draining worker waits for requests on connections it just accepted
ACCEPT_BATCH = 1  # connections a worker accepts each time the listening socket wakes it
TIMED_OUT_BATCH = 16  # ... at most, after leaving one to others that did not take it in time
ACCEPT_PAUSE = 1.0  # seconds a worker out of descriptors or memory waits before accepting again
REDIRECT_SHARE = 8  # the redirect port may hold 1/8 of the connection cap (at least MIN_REDIRECT)
MIN_REDIRECT = 64


# Apache's escaping of a logged field (server/util.c, ap_escape_logitem): the quote and the
# backslash, and every byte that is not printable ASCII, UTF-8 past ASCII included.
_NAMED = {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0B: "\\v",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
_ESCAPED = tuple(
    _NAMED.get(byte, chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}") for byte in range(256)
)
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def log_escape(text: str) -> str:
    """``text`` as a field of a combined access log line, escaped as Apache escapes it."""
    if _PLAIN.fullmatch(text):
        return text
    return "".join(_ESCAPED[byte] for byte in text.encode("utf-8", "surrogateescape"))


class CombinedAccessLog(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        self.logger.info(
            '%s - - [%s] "%s %s HTTP/%d.%d" %d %s "%s" "%s" %.4f %s',
            log_escape(request.remote or "-"),
            _clf_date(),
            log_escape(request.method),
            log_escape(request.path_qs),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length or "-",
            log_escape(request.headers.get("Referer", "-")),
            log_escape(request.headers.get("User-Agent", "-")),
            time_,
            request.get(REQUEST_ID, "-"),
        )


class JsonAccessLog(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "remote": request.remote,
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": response.body_length,
            "seconds": round(time_, 6),
            "request_id": request.get(REQUEST_ID),
            "referer": request.headers.get("Referer"),
            "user_agent": request.headers.get("User-Agent"),
        }
        self.logger.info(json.dumps(record, separators=(",", ":")))


_ACCESS_LOGS: dict[str, type[AbstractAccessLogger]] = {
    "combined": CombinedAccessLog,
    "json": JsonAccessLog,
}


def _clf_date() -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z")


def raise_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def client_limits(settings: Settings, file_limit: int) -> ClientLimits:
    """The guard's limits; an automatic connection cap stays below the open-file limit, leaving
    room for every backend's connections and the worker threads' files."""
    server = settings.server
    backend_connections = sum(
        getattr(spec, "max_connections", 0) for spec in settings.backends.values()
    )
    room = file_limit - _FD_RESERVE - backend_connections - (server.workers or 64)
    if server.http_redirect_port is not None:
        room -= redirect_cap(room)
    cap = server.max_client_connections or max(16, room)
    return ClientLimits(
        max_connections=cap,
        header_timeout=server.header_timeout,
        body_timeout=server.body_timeout,
        max_request_line=server.max_request_line,
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
    )


def redirect_cap(cap: int) -> int:
    """Open connections the redirect port (``server.http_redirect_port``) may hold beside
    ``cap`` on the main port."""
    return max(MIN_REDIRECT, cap // REDIRECT_SHARE)


def configure_access_log(fmt: str) -> None:
    access_log.propagate = False
    access_log.handlers.clear()
    if fmt != "none":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)


def serve(settings: Settings, load: Loader | None, role: WorkerRole | None = None) -> int:
    """Run until SIGTERM or SIGINT; the exit status. ``role``: as a supervisor's worker, which
    reloads nothing itself (``load`` is None)."""
    configure_access_log(settings.server.access_log)
    unmap_large_blocks()
    main = _serve(settings, load, raise_file_limit(), role)
    return eventloop.run(main, settings.server.event_loop)


def _single(load: Loader) -> Loader:
    """``load`` for one process without a supervisor, which a reload cannot turn into many."""

    def reload() -> Settings:
        settings = load()
        if resolve_processes(settings) != 1:
            log.warning("server.processes changed; it takes effect at the next restart")
        return settings

    return reload


async def _refresh(metrics: Metrics) -> None:
    while True:
        metrics.refresh()
        await asyncio.sleep(1)


class Holdings:
    """A worker's client connections, posted on its seat of the connection board (``board.py``)
    at each change: those open (the guard counts them) and those accepted but not yet handed
    to the loop."""

    def __init__(self, seat: Seat) -> None:
        self.seat = seat
        self.open = 0
        self.pending = 0
        self.left = False  # draining: no longer on the board

    @property
    def count(self) -> int:
        return self.open + self.pending

    def opened(self, count: int) -> None:
        """The guard's count of open connections changed."""
        self.open = count
        self.post()

    def accepting(self, change: int) -> None:
        self.pending += change
        self.post()

    def post(self) -> None:
        if not self.left:
            self.seat.post(self.count)

    def leave(self) -> None:
        """Draining: nobody is to wait for this worker to take a connection any more."""
        self.left = True
        self.seat.leave()

    def fewer_elsewhere(self, unheeded: dict[int, int]) -> dict[int, int]:
        """The other seats holding fewer connections (those of ``unheeded``, seat -> count, only
        once their count moved), with their counts."""
        return self.seat.fewer_elsewhere(self.count, unheeded)

    def still_unheeded(self, unheeded: dict[int, int]) -> dict[int, int]:
        """Those of ``unheeded`` whose count has not moved."""
        return self.seat.board.unchanged(unheeded)


class Listener:
    """A worker's accept loop on a listening socket it inherited. Each time the socket wakes it,
    it takes at most :data:`ACCEPT_BATCH` connections, and none while another worker holds fewer
    (as the connection board says, ``board.py``) unless one has waited :data:`board.DEFER`
    seconds; each is handed to the loop as asyncio's own accept would
    (``connect_accepted_socket``, on asyncio and uvloop alike). The socket stays readable while
    connections wait, so the loop comes back for the next one after its other work. With
    ``server.tls``, the guard does the handshake (and counts the connection from here)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        guard: ConnectionGuard,
        holdings: Holdings | None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.guard = guard
        self.holdings = holdings
        self.connecting: set[asyncio.Task[None]] = set()
        self.paused: asyncio.Handle | None = None  # (uvloop's timers are Handles)
        self.since: float | None = None  # when it began leaving waiting connections to others
        self.checked = 0.0  # when it last looked whether another holds fewer
        # seat -> count of workers that let a connection wait DEFER seconds: not waited for
        # again until their count is another
        self.unheeded: dict[int, int] = {}
        self.closed = False

    def start(self) -> None:
        """Listen (again, if the supervisor stopped the socket while no worker was alive)."""
        self.sock.setblocking(False)
        self.sock.listen(BACKLOG)
        if self.holdings is not None:
            self.holdings.post()  # seen at once, with no connection yet: the fewest
        self.loop.add_reader(self.sock.fileno(), self._ready)

    def _ready(self) -> None:
        """A connection waits: take one, unless another worker holds fewer; then look again a
        moment later. Once one has waited :data:`board.DEFER` seconds, take the waiting ones (up
        to :data:`TIMED_OUT_BATCH`) and heed the workers it waited for no more until their
        count moves: one stuck or busy costs one wait, not one per connection."""
        holdings = self.holdings
        if holdings is not None:
            if self.unheeded:  # heed again those whose count moved (or who left)
                self.unheeded = holdings.still_unheeded(self.unheeded)
            fewer = holdings.fewer_elsewhere(self.unheeded)
            if fewer:
                now = self.loop.time()
                if self.since is None or now - self.checked > board.DEFER:
                    self.since = now  # a new wait (the last look was long ago)
                self.checked = now
                if now - self.since < board.DEFER:
                    self._pause(board.RECHECK)
                    return
                log.debug(
                    "seats %s took no connection in %gs: not waited for until their count moves",
                    sorted(fewer),
                    board.DEFER,
                )
                self.unheeded.update(fewer)
                self.since = None
                self._accept(TIMED_OUT_BATCH)
                return
        self.since = None
        self._accept(ACCEPT_BATCH)

    def _pause(self, seconds: float) -> None:
        """Stop looking at the socket for ``seconds``."""
        self.loop.remove_reader(self.sock.fileno())
        self.paused = self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        self.paused = None
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._ready)

    def _accept(self, batch: int) -> None:
        for _ in range(batch):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none waiting (another worker took it), or gone before it was taken
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # accept(2)'s others (ENETDOWN, EPROTO, EPERM, ...; EINVAL once the
                    # supervisor shut the socket down): that connection is lost, not the worker
                    log.warning("accepting a connection failed: %s", exc)
                    return
                log.error("cannot accept connections: %s; again in %gs", exc, ACCEPT_PAUSE)
                if not self.closed:
                    self._pause(ACCEPT_PAUSE)
                return
            conn.setblocking(False)
            if self.holdings is not None:
                self.holdings.accepting(+1)
            task = self.loop.create_task(self._connect(conn))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            if self.guard.tls is not None:  # counted from now, handshake included
                await self.guard.accept_tls(conn)
            else:
                await self.loop.connect_accepted_socket(self.guard, sock=conn)
        except OSError as exc:  # a client that left
            log.debug("a connection accepted could not be set up: %s", exc)
            conn.close()
        except Exception:  # worse
            log.debug("a connection accepted could not be set up", exc_info=True)
            conn.close()
        finally:
            if self.holdings is not None:
                self.holdings.accepting(-1)

    def close(self) -> None:
        """Stop accepting; first take the connections already queued, as many as the guard has
        room for, so that the last copy of the socket to close resets none it could serve (the
        others' may be closed already). No more: on a reload the supervisor's copy stays open
        and the queue is the other workers' to serve, not this draining one's to answer 503."""
        self.closed = True
        if self.paused is not None:
            self.paused.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        room = self.guard.limits.max_connections - self.guard.open_connections
        with contextlib.suppress(OSError):  # a drain goes on whatever the socket says
            self._accept(min(BACKLOG, room - len(self.connecting)))
            self.sock.close()

    async def settled(self, timeout: float = SETTLE) -> None:
        """Every connection accepted has been handed to the loop (its TLS handshake done)."""
        if self.connecting:
            await asyncio.wait(list(self.connecting), timeout=timeout)


async def _serve(
    settings: Settings, load: Loader | None, file_limit: int, role: WorkerRole | None = None
) -> int:
    process = ProcessInfo(os.getpid(), role.index, role.processes) if role else None
    app = create_app(settings, process)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    serving = asyncio.Event()  # set once it listens
    reloads: set[asyncio.Task[bool]] = set()
    reread = None if load is None else _single(load)
    served: list[Certificates] = []  # the process's certificates, once it serves TLS

    async def reload_when_serving(load: Loader) -> bool:
        await serving.wait()  # a SIGHUP while it starts: once it serves
        loaded: list[Settings] = []

        def read() -> Settings:
            loaded.append(load())
            return loaded[-1]

        if not await reload(app, read):
            return False
        before, after = settings.server, loaded[-1].server
        if (before.tls is None) != (after.tls is None):
            log.warning("server.tls turned on or off; it takes effect at the next restart")
        if before.http_redirect_port != after.http_redirect_port:
            log.warning("server.http_redirect_port changed; it takes effect at the next restart")
        if served and after.tls is not None:  # the files again, renewed or not
            await served[0].reload(after.tls)
        return True

    def on_signal(signum: signal.Signals) -> None:
        if stopping.is_set():
            log.info("%s ignored: %s", signum.name, "draining" if role else "stopping")
        elif signum != signal.SIGHUP:
            stopping.set()
        elif reread is None:
            log.info(
                "worker %d (pid %d): SIGHUP ignored (the supervisor, pid %d, reloads the "
                "configuration)",
                role.index if role else 0,
                os.getpid(),
                os.getppid(),
            )
        else:
            task = loop.create_task(reload_when_serving(reread))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    for signum in sorted(HELD_SIGNALS):
        loop.add_signal_handler(signum, on_signal, signum)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)  # held since the supervisor forked
    try:
        return await _run(app, settings, file_limit, role, stopping, serving, reloads, served)
    finally:  # done: a late signal must not turn a clean exit into a killed one
        for signum in sorted(HELD_SIGNALS):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)


async def _run(
    app: web.Application,
    settings: Settings,
    file_limit: int,
    role: WorkerRole | None,
    stopping: asyncio.Event,
    serving: asyncio.Event,
    reloads: set[asyncio.Task[bool]],
    served: list[Certificates],
) -> int:
    """Set up, listen (then ``serving``), serve until ``stopping``, drain. With ``server.tls``,
    the certificates it serves go in ``served``."""
    server = settings.server
    app[TLS_STATUS] = lambda: served[0].status() if served else None
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=server.shutdown_timeout)
    handed = role.kept_fds if role is not None else ()  # the certificate's and key's, if any
    try:
        try:
            await runner.setup()
        except Exception as exc:
            log.exception("iiif-shim could not start")
            print(f"iiif-shim: could not start: {exc}", file=sys.stderr)
            return 1
        if stopping.is_set():  # stopped while it started: it accepted nothing, so nothing to drain
            await runner.cleanup()
            return 0
        metrics = app[METRICS]
        certificates: Certificates | None = None
        if server.tls is not None:
            fallback = kept(server.tls, role.kept_fds) if role is not None else None
            try:
                certificates = await asyncio.to_thread(
                    Certificates.open,
                    server.tls,
                    fallback,
                    lambda end: metrics.tls_certificate(end.timestamp()),
                )
            except CertificateError as exc:
                log.error("cannot serve HTTPS: %s", exc)
                print(f"iiif-shim: cannot serve HTTPS: {exc}", file=sys.stderr)
                await runner.cleanup()
                return 1
            served.append(certificates)
    finally:
        handover.close(handed)  # read, or not needed (no server.tls, an early return): closed
    limits = client_limits(settings, file_limit)
    handler_kwargs: dict[str, Any] = {
        "keepalive_timeout": server.keepalive_timeout,
        # aiohttp's own limits sit above the guard's, which answer with 414/431 first
        "max_line_size": server.max_request_line + 1024,
        "max_field_size": server.max_header_bytes + 1024,
        "max_headers": server.max_headers + 8,
    }
    if server.access_log != "none":
        handler_kwargs |= {
            "access_log_class": _ACCESS_LOGS[server.access_log],
            "access_log": access_log,
        }
    else:
        handler_kwargs["access_log"] = None
    assert runner.server is not None  # made by setup()
    seated = role is not None and role.seat >= 0
    holdings = Holdings(Seat(Board(Path(role.board_file)), role.seat)) if role and seated else None
    gate: TLSGate | None = None
    if certificates is not None:

        def hsts() -> int:
            tls = app[LIVE].current.settings.server.tls
            return tls.hsts if tls is not None else 0

        def failed(peer: object, exc: BaseException) -> None:
            handshake_failed(peer, exc)
            metrics.tls_handshake_failed()

        gate = TLSGate(certificates.context, server.header_timeout, hsts, failed)
    guard = ConnectionGuard(
        limits,
        handler_factory(runner.server, **handler_kwargs),
        on_event=metrics.client_refused,
        on_count=holdings.opened if holdings else None,
        tls=gate,
    )
    loop = asyncio.get_running_loop()
    listeners: list[Listener] = []  # a worker's; one process's with TLS
    single: asyncio.Server | None = None  # one process's own, plain HTTP
    redirecting: web.Server | None = None  # the server of the redirect port's answers
    redirect: asyncio.Server | None = None  # one process's own redirect port
    if role is not None:  # the supervisor bound them; listen() again keeps its backlog
        listeners = [
            Listener(loop, socket.socket(fileno=fd), guard, holdings) for fd in role.listen_fds
        ]
        port = listeners[0].sock.getsockname()[1] if listeners else server.port
    else:
        try:
            if gate is not None:  # accepted by its own loop, so counted before the handshake
                listeners = [Listener(loop, s, guard, None) for s in bind(server.host, server.port)]
            else:
                single = await loop.create_server(
                    guard, server.host, server.port, reuse_address=True, backlog=BACKLOG
                )
        except OSError as exc:
            print(
                f"iiif-shim: cannot listen on {server.host}:{server.port}: {listen_problem(exc)}",
                file=sys.stderr,
            )
            await runner.cleanup()
            return 1
        sockets = single.sockets if single is not None else [x.sock for x in listeners]
        port = sockets[0].getsockname()[1] if sockets else server.port
    # (a worker serves the redirect port its supervisor bound at start, whatever a reload says)
    if bool(role.redirect_fds) if role else server.http_redirect_port is not None:

        def acme_dir() -> Path | None:
            tls = app[LIVE].current.settings.server.tls
            return tls.acme_dir if tls is not None else None

        redirecting = web.Server(
            Redirect(port, lambda: app[LIVE].current.settings.server.public_url, acme_dir)
        )
        redirect_guard = ConnectionGuard(
            replace(limits, max_connections=redirect_cap(limits.max_connections)),
            handler_factory(redirecting, **handler_kwargs),
            on_event=metrics.client_refused,
        )
        if role is not None:
            listeners += [
                Listener(loop, socket.socket(fileno=fd), redirect_guard, None)
                for fd in role.redirect_fds
            ]
        else:
            try:
                redirect = await loop.create_server(
                    redirect_guard,
                    server.host,
                    server.http_redirect_port,
                    reuse_address=True,
                    backlog=BACKLOG,
                )
            except OSError as exc:
                if single is not None:
                    single.close()
                for listener in listeners:
                    listener.sock.close()
                print(
                    f"iiif-shim: cannot listen on {server.host}:{server.http_redirect_port} "
                    f"(server.http_redirect_port): {listen_problem(exc)}",
                    file=sys.stderr,
                )
                await runner.cleanup()
                return 1
    for listener in listeners:
        listener.start()
    serving.set()
    metrics.watch("client_connections", lambda: guard.open_connections)
    refresher = loop.create_task(_refresh(metrics)) if metrics.multiprocess else None
    watcher = loop.create_task(certificates.watch()) if certificates is not None else None
    lifeline: asyncio.Task[None] | None = None

    if role is None:
        log.info(
            "iiif-shim %s with %s: %s://%s:%d/ (IIIF at %s/3/ and %s/2/; up to %d connections%s)",
            __version__,
            settings.origin,
            "https" if certificates is not None else "http",
            server.host,
            port,
            settings.iiif.prefix,
            settings.iiif.prefix,
            limits.max_connections,
            f"; port {server.http_redirect_port} redirects to HTTPS" if redirect else "",
        )
    else:
        channel = socket.socket(fileno=role.channel_fd)
        channel.setblocking(False)
        if not stopping.is_set():  # (stopping, the supervisor is told by this one's exit)
            await loop.sock_sendall(channel, b"ready\n")
        lifeline = loop.create_task(_watch_supervisor(loop, channel, stopping))
        log.info(
            "worker %d (pid %d) ready: up to %d connections, %d image threads",
            role.index,
            os.getpid(),
            limits.max_connections,
            server.workers,
        )
    await stopping.wait()
    _exit_if_stuck(server.shutdown_timeout + KILL_GRACE)
    if role is None:
        log.info(
            "stopping: no new connections; requests in flight get up to %gs",
            server.shutdown_timeout,
        )
    else:
        log.info(
            "worker %d (pid %d) draining: requests in flight get up to %gs",
            role.index,
            os.getpid(),
            server.shutdown_timeout,
        )
    for own in (single, redirect):
        if own is not None:
            own.close()
    if holdings is not None:
        holdings.leave()
    for listener in listeners:
        listener.close()
    if role is not None or gate is not None:  # let connections just accepted be set up: their
        handshakes = min(server.header_timeout, server.shutdown_timeout)  # TLS handshakes too
        for listener in listeners:
            await listener.settled(SETTLE if gate is None else handshakes)
    if role is not None:  # the others go on: let connections just accepted send their request
        await asyncio.sleep(min(SETTLE, server.shutdown_timeout))  # (cleanup closes idle ones)
    await asyncio.gather(*reloads, return_exceptions=True)
    for task in (refresher, lifeline, watcher):
        if task is not None:
            task.cancel()
    if redirecting is not None:  # (its answers take no time: its idle connections close)
        await redirecting.shutdown(server.shutdown_timeout)
    await runner.cleanup()
    if role is None:
        log.info("stopped")
    else:
        log.info("worker %d (pid %d) done", role.index, os.getpid())
    return 0


def _exit_if_stuck(seconds: float) -> None:
    """Draining began: exit with status 1 if the process is still there ``seconds`` later (a
    daemon thread's timer, which runs on while the loop, asyncio's executor or the interpreter
    wait for a stuck thread; it dies with a process that exits)."""

    def give_up() -> None:
        log.error("still not done %gs after it began to stop (a stuck thread): exiting", seconds)
        for handler in (*logging.getLogger().handlers, *log.handlers):
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


async def _watch_supervisor(
    loop: asyncio.AbstractEventLoop, channel: socket.socket, stopping: asyncio.Event
) -> None:
    """Stop when the supervisor is gone (its end of the channel closed, even by SIGKILL)."""
    try:
        while await loop.sock_recv(channel, 64):
            pass
    except OSError:
        pass
    if not stopping.is_set():
        log.warning("the supervisor is gone: stopping")
        stopping.set()
