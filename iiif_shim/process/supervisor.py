"""Several processes on one port: the supervisor and what its workers need to know.

With ``server.processes`` above 1, ``iiif-shim serve`` becomes a supervisor (pre-fork, as nginx
and gunicorn do): it binds the listening socket once (and ``server.http_redirect_port``'s, if
set), then starts that many worker processes
(``iiif-shim serve`` again, told by :data:`WORKER_ENV` which socket and which slot are theirs),
which inherit the socket and accept from it, each with its own event loop, thread pool and
caches. A shared inherited socket rather than one ``SO_REUSEPORT`` listener per process: closing
a reuseport listener resets the connections queued in its backlog, so every worker restart
would lose some; closing one copy of a shared socket loses none. Connections are spread over
the workers by the workers themselves: each takes one per wake-up, and leaves it to another
that holds fewer, as the connection board in the run directory says (``board.py``; the
supervisor makes it and gives each worker a seat on it).

The supervisor owns the configuration. It reads and checks the file (at start and on SIGHUP,
never otherwise) and hands every worker the :class:`Settings` it validated, pickled into a
sealed anonymous in-memory file whose descriptor the :class:`WorkerRole` names
(``handover.py``: no file on disk holds the resolved secrets, whatever ends the supervisor); a
worker never reads the YAML, so every worker runs the one configuration, whatever the file on
disk says meanwhile. Nor does it need the environment variables holding secrets that the
configuration named with ``${NAME}`` (resolved already): they are left out of its environment,
so a worker holds no secret there (other variables it named, such as ``${TMPDIR}``, stay).

The supervisor owns the lifecycle:

- SIGTERM / SIGINT: close its copy of the socket, send SIGTERM to every worker that is not
  already draining, give them ``server.shutdown_timeout`` to drain (then SIGKILL), remove the
  run directory, exit 0. A worker ignores a repeated SIGTERM (or SIGHUP) while it drains, so
  shutdown and reload compose in any order; the supervisor ignores them while it stops;
- SIGHUP: load and check the configuration here first (a file with problems is logged and
  changes nothing), then replace the workers one at a time: a new worker starts and reports
  ready over its channel before the old one gets SIGTERM and drains. If the first new worker
  cannot start, the reload is refused and the previous configuration stays the running one;
  once one has started, the new one is, and a slot whose new worker fails keeps its old worker
  until a retry (with the backoff below) replaces it;
- a worker that dies is replaced, with the running configuration, after a backoff (0.5 s,
  doubling up to 30 s while workers of that slot keep dying within 10 s of starting);
- while no worker is alive to accept (every one died), the listening socket is shut down, so
  connections are refused at once instead of waiting in its queue; the next worker to start
  listens on it again.

Workers are started with SIGTERM, SIGINT and SIGHUP blocked, which they unblock once their
handlers are in place: a signal that comes while one starts waits for it instead of killing it.
The supervisor reaps its own children (a SIGCHLD handler calls ``waitpid`` for each pid it
started), so the exit status it reports is always the real one, and it signals only children it
has not reaped, never a pid the system may have given to another process.

Each worker gets a private run directory (:data:`RUN_DIR_ENV`, removed at exit) whose
``metrics`` folder is ``PROMETHEUS_MULTIPROC_DIR``, so ``/metrics`` sums over every worker; it
holds no secret. Serving TLS, the supervisor keeps in its memory the last certificate and key
that passed every check (at start, on each reload, and when ``server.tls.watch`` sees the
files change: ``tls.good_pair``) and hands them to each worker it starts as two sealed
in-memory files: a worker that starts while the files are bad serves that pair instead of
dying (``tls.py``). A configuration without ``server.tls`` forgets the pair, so no worker of it
holds a key. Where those in-memory files cannot be made (``memfd_create`` refused),
``serve`` says so in one line and exits 1 before starting any worker. The
channel, one end of a socket pair per worker, carries ``ready``; its end-of-file tells the
worker that the supervisor is gone (the worker then drains and exits), and tells the supervisor
that the worker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import errno
import io
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from iiif_shim import __version__
from iiif_shim.base import redaction
from iiif_shim.base.errors import ConfigError
from iiif_shim.base.machine import cpus
from iiif_shim.cache.journal import RUN_DIR_ENV
from iiif_shim.config import environment
from iiif_shim.config.settings import Settings
from iiif_shim.config.tls import TLSSettings
from iiif_shim.process import board, handover
from iiif_shim.process.tls import CHECK_LIMIT, IDLE, Pair, Signature, good_pair, signature

log = logging.getLogger("iiif_shim")

WORKER_ENV = "IIIF_SHIM_WORKER"  # set by the supervisor for its workers only
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
START_TIMEOUT = 60.0  # seconds a new worker has to report ready
STABLE_AFTER = 10.0  # a worker that lived this long did start well: its slot's backoff resets
FIRST_DELAY, MAX_DELAY = 0.5, 30.0  # seconds before replacing a dead worker
KILL_GRACE = 5.0  # seconds past shutdown_timeout before a draining worker is killed
#: Blocked in a new worker until its handlers are in place (``server.py`` unblocks them).
HELD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})

Loader = Callable[[], Settings]


def _mapping_proxy(items: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(items)


class _SettingsPickler(pickle.Pickler):
    """Pickles :class:`Settings`, whose mappings are read-only proxies (which pickle refuses)."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[MappingProxyType] = lambda proxy: (_mapping_proxy, (dict(proxy),))


def pickled(settings: Settings) -> bytes:
    """``settings`` as the workers are handed them (raises if a value cannot be pickled)."""
    out = io.BytesIO()
    _SettingsPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(settings)
    return out.getvalue()


def read_settings(fd: int) -> Settings:
    """The settings handed over in ``fd`` (``handover.py``). Unpickling runs code, so a
    descriptor that is not a sealed in-memory file is refused before it is read."""
    settings = pickle.loads(handover.read(fd))
    if not isinstance(settings, Settings):
        raise TypeError(f"descriptor {fd} holds no settings")
    return settings


def _resolved_secret(name: str, value: str) -> bool:
    """Whether the variable ``name`` was substituted into the configuration (``${NAME}``,
    resolved already) and holds a secret: a worker's environment leaves it out. Other variables
    the configuration named (``${TMPDIR}`` in a path, say) stay: a worker may need them too."""
    return name in environment.referenced() and redaction.redact(value) != value


@dataclass(frozen=True)
class WorkerRole:
    """What a worker process is told: its slot, how many serve, its inherited descriptors (the
    listening sockets of ``server.port``, and of ``server.http_redirect_port`` if any; the
    in-memory file holding the configuration the supervisor runs; those of the last good
    certificate and key, if any), and its seat on the connection board (``board.py``; -1:
    none)."""

    index: int
    processes: int
    listen_fds: tuple[int, ...]
    channel_fd: int
    settings_fd: int
    board_file: str
    seat: int
    redirect_fds: tuple[int, ...] = ()
    kept_fds: tuple[int, ...] = ()  # the certificate's and the key's, or none

    def encode(self) -> str:
        return json.dumps(
            [
                self.index,
                self.processes,
                list(self.listen_fds),
                self.channel_fd,
                self.settings_fd,
                self.board_file,
                self.seat,
                list(self.redirect_fds),
                list(self.kept_fds),
            ],
            separators=(",", ":"),
        )

    @classmethod
    def from_environment(cls) -> WorkerRole | None:
        raw = os.environ.get(WORKER_ENV)
        if not raw:
            return None
        fields = json.loads(raw)
        index, processes, fds, channel, settings_fd, board_file, seat, redirects, kept = fields
        return cls(
            int(index),
            int(processes),
            tuple(int(fd) for fd in fds),
            int(channel),
            int(settings_fd),
            str(board_file),
            int(seat),
            tuple(int(fd) for fd in redirects),
            tuple(int(fd) for fd in kept),
        )

    def settings(self) -> Settings:
        """This worker's share of the configuration the supervisor validated (read once: the
        descriptor is closed)."""
        try:
            return share(read_settings(self.settings_fd), self.processes)
        finally:
            handover.close((self.settings_fd,))


def resolve_processes(settings: Settings) -> int:
    return settings.server.processes or cpus()


def share(settings: Settings, processes: int) -> Settings:
    """One worker's part of the whole server: ``memory_budget / processes``, and image threads
    ``max(1, CPUs // processes)`` unless ``server.workers`` says how many."""
    server = settings.server
    return replace(
        settings,
        server=replace(
            server,
            workers=server.workers or max(1, cpus() // processes),
            memory_budget=max(1, server.memory_budget // processes),
        ),
    )


def listen_problem(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    return {
        errno.EADDRINUSE: "the port is already in use",
        errno.EADDRNOTAVAIL: "this machine has no such address",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
    }.get(exc.errno or 0, exc.strerror or str(exc))


def _new_socket(family: int, kind: int, proto: int) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address ``host`` names, as asyncio's create_server binds. They
    listen once the first worker serves them (it calls ``listen``), so no connection is
    accepted before a worker can answer it. A port the system picked (port 0) is bound again by
    its number, so that it is kept when the socket stops listening (no worker alive) and listens
    again."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = _new_socket(family, kind, proto)
            sockets.append(sock)
            sock.bind(address)
            if port == 0:  # both bound, neither listening: SO_REUSEADDR lets the second in
                pinned = _new_socket(family, kind, proto)
                sockets[-1] = pinned
                pinned.bind((address[0], sock.getsockname()[1], *address[2:]))
                sock.close()
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


@dataclass(eq=False)
class Worker:
    """One worker process, from its start until the supervisor has reaped it."""

    index: int
    proc: subprocess.Popen[bytes]
    channel: socket.socket
    generation: int  # of the configuration it was started with
    seat: int  # on the connection board (-1: none)
    exited: asyncio.Future[int]  # its exit status, once reaped
    shutdown_timeout: float  # of its configuration: how long it drains, whatever a reload says
    started: float = field(default_factory=time.monotonic)
    retiring: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum``, unless it is reaped: until then its pid is still this process."""
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        load: Loader,
        command: Sequence[str],
        sockets: list[socket.socket],
        run_dir: Path,
        redirects: Sequence[socket.socket] = (),
    ) -> None:
        self.load = load
        self.command = list(command)
        self.sockets = sockets
        self.redirects = list(redirects)  # those of server.http_redirect_port
        self.run_dir = run_dir
        self.metrics_dir = run_dir / "metrics"
        self.slots: dict[int, Worker] = {}
        self.children: set[Worker] = set()  # every worker not reaped: serving, starting, draining
        self.failures: dict[int, int] = {}  # per slot: workers in a row that died young
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.lock = asyncio.Lock()  # one change of the slots at a time
        self.reloading = False
        self.reload_again = False
        self.paused = False  # the socket was shut down: no worker was alive to accept
        self.watching: asyncio.AbstractEventLoop | None = None  # where SIGCHLD is handled
        self.board_file = run_dir / "connections"
        board.create(self.board_file)
        self.board = board.Board(self.board_file)
        self.free_seats = set(range(board.SEATS))
        self.generation = 0
        self.settings = settings
        self.handed = b""  # the running configuration as workers are handed it
        self.pair: Pair | None = None  # the last good certificate and key, for workers
        self.kept: Signature | None = None  # the certificate files as they were when kept
        self._install(settings)

    # --- the last good certificate ----------------------------------------------------------

    async def _keep_certificate(self, tls: TLSSettings | None, changed: bool = False) -> None:
        """Keep ``tls``'s files in memory for workers that start later if they pass every check
        (only if they ``changed`` since kept, when told so); a failure is logged, never
        raised."""
        if tls is None:
            return
        try:
            async with asyncio.timeout(CHECK_LIMIT):
                now = await asyncio.to_thread(signature, tls)
                if changed and self.kept == now:
                    return
                pair = await asyncio.to_thread(good_pair, tls)
        except Exception as exc:
            log.warning("server.tls: no copy of the certificate kept for workers: %s", exc)
            return
        if pair is not None:
            if self.pair is None or self.pair.described != pair.described:
                log.info(
                    "server.tls: kept the certificate %s for workers that start", pair.described
                )
            self.pair, self.kept = pair, now

    async def _watch_certificate(self) -> None:
        """Every ``server.tls.watch`` seconds, keep the files again if they changed."""
        while not self.stopping.is_set():
            tls = self.settings.server.tls
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), (tls.watch if tls else 0) or IDLE)
            if tls is not None and tls.watch and not self.stopping.is_set():
                await self._keep_certificate(self.settings.server.tls, changed=True)

    # --- the running configuration ----------------------------------------------------------

    def _install(self, settings: Settings) -> None:
        """Make ``settings`` the running configuration: a new generation, pickled for the
        workers. Nothing changes unless it can be pickled."""
        handed = pickled(settings)
        self.generation += 1
        self.settings, self.handed = settings, handed
        if settings.server.tls is None:  # no certificate or key handed to workers without TLS
            self.pair = self.kept = None

    # --- workers ------------------------------------------------------------------------

    async def spawn(self, index: int, processes: int) -> Worker:
        """Start a worker for slot ``index`` of ``processes`` with the running configuration."""
        loop = asyncio.get_running_loop()
        self._watch_children(loop)
        ours, theirs = socket.socketpair()
        fds = tuple(s.fileno() for s in self.sockets)
        redirect_fds = tuple(s.fileno() for s in self.redirects)
        seat = min(self.free_seats, default=-1)
        self.free_seats.discard(seat)
        handed: tuple[int, ...] = ()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)  # the child inherits it
        try:
            handed = (handover.write("settings", self.handed),)
            if self.pair is not None:  # one at a time: each closed below if the next fails
                handed += (handover.write("tls-cert", self.pair.cert),)
                handed += (handover.write("tls-key", self.pair.key),)
            role = WorkerRole(
                index,
                processes,
                fds,
                theirs.fileno(),
                handed[0],
                str(self.board_file),
                seat,
                redirect_fds,
                handed[1:],
            )
            env = {
                **{k: v for k, v in os.environ.items() if not _resolved_secret(k, v)},
                WORKER_ENV: role.encode(),
                RUN_DIR_ENV: str(self.run_dir),
                METRICS_DIR_ENV: str(self.metrics_dir),
            }
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                env=env,
                pass_fds=(*fds, *redirect_fds, theirs.fileno(), *handed),
            )
        except BaseException:
            ours.close()
            self._free_seat(seat)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            theirs.close()
            handover.close(handed)
        ours.setblocking(False)
        worker = Worker(
            index,
            proc,
            ours,
            self.generation,
            seat,
            loop.create_future(),
            self.settings.server.shutdown_timeout,
        )
        self.children.add(worker)
        if self.stopping.is_set():
            worker.signal(signal.SIGTERM)
        return worker

    async def ready(self, worker: Worker) -> bool:
        """Whether ``worker`` reports ready in time; one that does not is stopped."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                said = await loop.sock_recv(worker.channel, 64)
        except TimeoutError:
            log.error(
                "worker %d (pid %d) not ready after %gs", worker.index, worker.pid, START_TIMEOUT
            )
            said = b""
        except OSError:
            said = b""
        if said.startswith(b"ready"):
            if self.paused and not self.stopping.is_set():
                self.paused = False
                log.info("worker %d (pid %d) accepts connections again", worker.index, worker.pid)
            return True
        if not self.stopping.is_set():  # stopping, it got SIGTERM and exits by itself
            worker.signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker.exited), KILL_GRACE)
        return False

    def _watch_children(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.watching is not loop:
            loop.add_signal_handler(signal.SIGCHLD, self._reap_children)
            self.watching = loop

    def _reap_children(self) -> None:
        """SIGCHLD: reap every child of ours that has exited (signals of several children that
        exit together arrive as one)."""
        for worker in list(self.children):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: nothing in this process does that
                log.error("worker %d (pid %d): exit status lost", worker.index, worker.pid)
                self._exited(worker, 255)
                continue
            if pid:
                self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: Worker, code: int) -> None:
        worker.proc.returncode = code  # so that Popen never waits for it again
        worker.channel.close()
        self.children.discard(worker)
        self._free_seat(worker.seat)
        with contextlib.suppress(OSError):
            _mark_process_dead(worker.pid, self.metrics_dir)
        if self.slots.get(worker.index) is worker and not self.stopping.is_set():
            del self.slots[worker.index]  # died while serving: replace it
            lived = time.monotonic() - worker.started
            if lived >= STABLE_AFTER:
                self.failures[worker.index] = 0
            self._background(self._replace(worker.index, f"{_status(code)} after {lived:.1f}s"))
        else:
            level = logging.INFO if code == 0 or worker.retiring else logging.WARNING
            log.log(level, "worker %d (pid %d) exited: %s", worker.index, worker.pid, _status(code))
        if not self.stopping.is_set() and all(w.retiring for w in self.children):
            self._pause()
        worker.exited.set_result(code)

    def _free_seat(self, seat: int) -> None:
        if seat >= 0:
            self.board.free(seat)
            self.free_seats.add(seat)

    def _pause(self) -> None:
        """No worker is alive to accept: refuse connections (and reset those queued) instead of
        letting them wait. A worker that starts listens on the socket again, so this is done
        each time none is alive, paused before or not (a worker may listen, then die before it
        is ready). Only a listening socket is shut down: one shut down before it listens would
        reset every connection once it does."""
        for sock in (*self.sockets, *self.redirects):
            with contextlib.suppress(OSError):
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    sock.shutdown(socket.SHUT_RDWR)
        if not self.paused:
            self.paused = True
            log.warning("no worker is alive: connections are refused until one is back")

    def retire(self, worker: Worker) -> None:
        """SIGTERM: stop accepting, drain within the shutdown_timeout it was started with (a
        reload may have changed the running one); then it is killed."""
        worker.retiring = True
        worker.signal(signal.SIGTERM)
        limit = worker.shutdown_timeout + KILL_GRACE
        asyncio.get_running_loop().call_later(limit, self._kill_late, worker)

    def _kill_late(self, worker: Worker) -> None:
        if not worker.exited.done():
            log.warning("worker %d (pid %d) still draining: killed", worker.index, worker.pid)
            worker.signal(signal.SIGKILL)

    async def _fill(self, index: int, processes: int) -> bool:
        """Start a worker for slot ``index`` with the running configuration; once it is ready,
        it takes the slot and the worker it replaces (if any) drains. Under the lock."""
        worker = await self.spawn(index, processes)
        if not await self.ready(worker) or self.stopping.is_set():
            return False
        old = self.slots.get(index)
        self.slots[index] = worker
        log.info("worker %d (pid %d) ready", index, worker.pid)
        if old is not None:
            self.retire(old)
        return True

    async def _replace(self, index: int, why: str) -> None:
        """A new worker in a slot that is empty (its worker died) or holds a worker of an older
        configuration, after a backoff that grows while the slot's workers keep dying young, so
        one that cannot start is not retried in a loop."""
        while not self.stopping.is_set():
            failures = self.failures.get(index, 0)
            delay = min(MAX_DELAY, FIRST_DELAY * 2**failures)
            log.warning("worker %d %s; starting another in %gs", index, why, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            async with self.lock:
                current = self.slots.get(index)
                if self.stopping.is_set() or (
                    current is not None and current.generation == self.generation
                ):
                    return  # stopping, or a reload filled the slot meanwhile
                processes = resolve_processes(self.settings)
                if index >= processes:
                    return  # a reload with fewer processes: no longer wanted
                self.failures[index] = failures + 1
                if await self._fill(index, processes):
                    return
            why = "could not start"

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- signals --------------------------------------------------------------------------

    def on_hup(self) -> None:
        if self.stopping.is_set():
            log.info("SIGHUP ignored: stopping")
        elif self.reloading:
            self.reload_again = True
        else:
            self._background(self.restart())

    def on_stop(self, signum: signal.Signals) -> None:
        if self.stopping.is_set():
            log.info("%s ignored: already stopping", signum.name)
            return
        self.stopping.set()

    async def restart(self) -> None:
        self.reloading = True
        try:
            while True:
                self.reload_again = False
                await self._restart_once()
                if not self.reload_again or self.stopping.is_set():
                    return
        finally:
            self.reloading = False

    async def _restart_once(self) -> None:
        try:
            settings = await asyncio.to_thread(self.load)
        except ConfigError as exc:
            log.error("reload refused, still serving the previous configuration:\n%s", exc.report())
            return
        except Exception:
            log.exception("reload failed, still serving the previous configuration")
            return
        for path, message in settings.warnings:
            log.warning("warning: %s: %s", path, message)
        before, after = self.settings.server, settings.server
        for key in ("host", "port", "http_redirect_port"):
            if getattr(before, key) != getattr(after, key):
                log.warning("server.%s changed; it takes effect at the next restart", key)
        processes = resolve_processes(settings)
        await self._keep_certificate(settings.server.tls)
        async with self.lock:
            if self.stopping.is_set():
                return
            log.info(
                "restarting %d workers one at a time with the configuration from %s",
                processes,
                settings.origin,
            )
            previous = (self.settings, self.handed, self.generation, self.pair, self.kept)
            try:
                self._install(settings)
            except Exception:  # e.g. a value that cannot be pickled: nothing changed
                log.exception("reload failed, still serving the previous configuration")
                return
            for index in range(processes):
                if await self._fill(index, processes):
                    self.failures[index] = 0
                    continue
                if self.stopping.is_set():
                    return
                if index == 0:  # nothing changed yet: the previous configuration stays
                    self.settings, self.handed, self.generation, self.pair, self.kept = previous
                    log.error(
                        "reload refused: a worker did not start with the configuration "
                        "from %s; still serving the previous configuration",
                        settings.origin,
                    )
                    return
                log.error(
                    "worker %d did not start with the new configuration; its old worker "
                    "serves until another attempt succeeds",
                    index,
                )
                for later in range(index, processes):
                    why = "did not start with the new configuration"
                    self._background(self._replace(later, why))
                break
            for index in sorted(self.slots):
                if index >= processes:
                    self.retire(self.slots.pop(index))
            log.info("reloaded the configuration from %s", settings.origin)

    # --- the whole ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._watch_children(loop)
        handlers: list[tuple[signal.Signals, Callable[[], None]]] = [
            (signal.SIGTERM, lambda: self.on_stop(signal.SIGTERM)),
            (signal.SIGINT, lambda: self.on_stop(signal.SIGINT)),
            (signal.SIGHUP, self.on_hup),
        ]
        for signum, action in handlers:
            loop.add_signal_handler(signum, action)
        try:
            await self._keep_certificate(self.settings.server.tls)
            self._background(self._watch_certificate())
            starting = loop.create_task(self._start(resolve_processes(self.settings)))
            stop = loop.create_task(self.stopping.wait())
            await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done() and not starting.result() and not self.stopping.is_set():
                stop.cancel()
                print("iiif-shim: could not start: a worker process failed", file=sys.stderr)
                await self._shutdown(quiet=True)
                return 1
            await stop  # SIGTERM may come while the workers start: they are stopped at once
            self.tasks.add(starting)
            await self._shutdown()
            return 0
        finally:  # done: a late signal must not kill the supervisor before it cleans up
            for signum, _ in handlers:
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)
            loop.remove_signal_handler(signal.SIGCHLD)

    async def _start(self, processes: int) -> bool:
        log.info(
            "iiif-shim %s with %s: starting %d processes on port %d",
            __version__,
            self.settings.origin,
            processes,
            self.sockets[0].getsockname()[1],
        )
        async with self.lock:
            started = await asyncio.gather(*(self.spawn(i, processes) for i in range(processes)))
            ready = await asyncio.gather(*(self.ready(w) for w in started))
            if not all(ready) or self.stopping.is_set():
                return False
            self.slots = {w.index: w for w in started}
        server = self.settings.server
        log.info(
            "iiif-shim %s with %s: %s://%s:%d/ (IIIF at %s/3/ and %s/2/; %d processes: %s; "
            "run directory %s)%s",
            __version__,
            self.settings.origin,
            "https" if server.tls is not None else "http",
            server.host,
            self.sockets[0].getsockname()[1],
            self.settings.iiif.prefix,
            self.settings.iiif.prefix,
            processes,
            " ".join(str(w.pid) for w in started),
            self.run_dir,
            f"; port {self.redirects[0].getsockname()[1]} redirects to HTTPS"
            if self.redirects
            else "",
        )
        return True

    async def _shutdown(self, quiet: bool = False) -> None:
        self.stopping.set()
        limit = self.settings.server.shutdown_timeout
        if not quiet:
            log.info("stopping: no new connections; requests in flight get up to %gs", limit)
        for sock in (*self.sockets, *self.redirects):  # the workers close their copies: then
            sock.close()  # nothing accepts
        for worker in list(self.children):
            if not worker.retiring:  # those drain already
                worker.signal(signal.SIGTERM)
        waits = [w.exited for w in list(self.children)]
        if waits:  # each drains within its own configuration's timeout
            longest = max(w.shutdown_timeout for w in self.children)
            _, late = await asyncio.wait(waits, timeout=longest + KILL_GRACE)
            for worker in list(self.children):
                log.warning("worker %d (pid %d) still draining: killed", worker.index, worker.pid)
                worker.signal(signal.SIGKILL)
            if late:
                await asyncio.wait(late, timeout=KILL_GRACE)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=KILL_GRACE)
        if not quiet:
            log.info("stopped")


def _mark_process_dead(pid: int, folder: Path) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def supervise(settings: Settings, load: Loader, command: Sequence[str]) -> int:
    """Bind, run the workers until SIGTERM or SIGINT; the exit status."""
    server = settings.server
    try:
        sockets = bind(server.host, server.port)
    except OSError as exc:
        print(
            f"iiif-shim: cannot listen on {server.host}:{server.port}: {listen_problem(exc)}",
            file=sys.stderr,
        )
        return 1
    redirects: list[socket.socket] = []
    if (port := server.http_redirect_port) is not None:
        try:
            if port == sockets[0].getsockname()[1]:  # (bound, not listening: bind let it in)
                raise OSError(errno.EADDRINUSE, "the port is server.port")
            redirects = bind(server.host, port)
        except OSError as exc:
            print(
                f"iiif-shim: cannot listen on {server.host}:{port} (server.http_redirect_port): "
                f"{listen_problem(exc)}",
                file=sys.stderr,
            )
            for sock in sockets:
                sock.close()
            return 1
    try:  # workers are handed their settings in sealed in-memory files: can they be made?
        handover.close((handover.write("settings", b""),))
    except handover.Refused as exc:
        print(f"iiif-shim: {exc.strerror}", file=sys.stderr)
        for sock in (*sockets, *redirects):
            sock.close()
        return 1
    run_dir = Path(tempfile.mkdtemp(prefix="iiif-shim-"))  # mode 0700
    try:
        (run_dir / "metrics").mkdir()
        supervisor = Supervisor(settings, load, command, sockets, run_dir, redirects)
        return asyncio.run(supervisor.run())
    finally:
        for sock in (*sockets, *redirects):
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
