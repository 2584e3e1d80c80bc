"""How connections spread over the workers of ``serve --processes 2``, and what the second
process adds on cached tiles. Not a test: it reports, it asserts nothing.

    .venv/bin/python bench/processes.py         # appends its section to docs/benchmarks.md
    .venv/bin/python bench/processes.py --before /tmp/older-checkout   # and an older build

**Split.** ``--tries`` (30) tries of 8, then 32, keep-alive connections opened together to an
idle 2-process server (non-blocking connects sent in one go, as wrk or a proxy's pool opens
them), and of 8 opened one after another (each asks and is answered before the next opens, as a
proxy opens upstream connections while its load grows); each connection sends ``GET /health``,
whose ``process.pid`` says which worker took it, and stays open until the try ends. Reported
per event loop: the tries that put every connection on one worker, those that put 7 of 8 or
more (28 of 32 or more) on one, and the median share of the busier worker.

**Throughput.** A lean client (a raw asyncio protocol on uvloop when installed, requests made
once, keep-alive) keeps ``--connections`` (8) connections busy over 16 tiles of the bundled
6000x4000 ``chart.jpg`` for ``--seconds`` (8) per round, its connections opened together (as
wrk opens them); then each connection asks for ``/health``, which says which worker served it.
Reported per round: the requests per second, the shim's CPU time per request, how the
connections split over the workers (``8:0``: one worker served them all), the client's own CPU
time and the CPUs other processes kept busy meanwhile. Before each round the server is warmed
by passes asking each tile 8 times, each over a fresh connection, until a pass meets no miss of
the rendered-image cache (at most ``--warm``, 60 s), so that every worker answers every tile
from its cache; then the round waits until the machine is ``--quiet`` (90%) idle over a second
(at most 2 minutes: other work shares it), and is run again (up to three times) if other
processes kept more than a tenth of a CPU busy while it ran. 1 and 2 processes alternate for
``--rounds`` (5) rounds, each in a fresh server; the medians and their ratio are reported.
Everything shares one machine (the client too): compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import json
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import cpu_seconds  # noqa: E402
from tests.support import BUNDLED, Process, free_port, wait_until, write_config  # noqa: E402

TILES = [
    f"/iiif/3/chart.jpg/{x},{y},1024,1024/256,/0/default.jpg"
    for x in range(0, 4096, 1024)
    for y in range(0, 4096, 1024)
]


def start(tree: Path, workdir: Path, processes: int, loop: str) -> Process:
    """The shim of the checkout ``tree``, serving the bundled images, on a free port."""
    config = write_config(
        workdir / f"shim-{processes}-{loop}.yaml",
        f"""\
server: {{event_loop: {loop}, access_log: none}}
backends:
  local: {{type: files, root: "{BUNDLED}"}}
routes:
  - {{backend: local}}
""",
    )
    port = free_port()
    args = [sys.executable, "-m", "iiif_shim", "serve", "--config", str(config)]
    args += ["--port", str(port), "--processes", str(processes)]
    shim = Process(
        args, port, workdir / f"shim-{port}.log", env={"PYTHONPATH": str(tree)}, cwd=tree
    )
    wait_until(lambda: len(_pids(port, 8 * processes)) == processes, "every worker answering")
    return shim


def _health_pid(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        pid: int = json.loads(conn.getresponse().read())["process"]["pid"]
        return pid
    finally:
        conn.close()


def _pids(port: int, count: int) -> set[int]:
    return {_health_pid(port) for _ in range(count)}


def _open_together(port: int, count: int) -> list[socket.socket]:
    """``count`` connections opened together: every connect sent before any is waited for."""
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
    for sock in socks:
        select.select([], [sock], [], 10)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise ConnectionError(f"cannot connect to port {port}")
    return socks


def together(port: int, count: int) -> list[int]:
    """The worker pid answering on each of ``count`` connections opened together."""
    socks = _open_together(port, count)
    try:
        for sock in socks:
            sock.settimeout(10)
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        pids = []
        for sock in socks:
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            pids.append(json.loads(answer.read())["process"]["pid"])
        return pids
    finally:
        for sock in socks:
            sock.close()


def one_by_one(port: int, count: int) -> list[int]:
    """The worker pid answering on each of ``count`` connections opened one after another,
    each kept open."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]
    try:
        pids = []
        for conn in conns:
            conn.request("GET", "/health")
            pids.append(json.loads(conn.getresponse().read())["process"]["pid"])
        return pids
    finally:
        for conn in conns:
            conn.close()


@dataclass(frozen=True)
class Split:
    loop: str
    opened: str  # together, or one after another
    connections: int
    tries: int
    all_on_one: int
    lopsided: int  # the busier worker took 7/8 of them or more
    median_share: float  # of the busier worker


PATTERNS = (("together", together, 8), ("together", together, 32), ("one by one", one_by_one, 8))


def splits(tree: Path, workdir: Path, loop: str, tries: int) -> list[Split]:
    shim = start(tree, workdir, 2, loop)
    found = []
    try:
        for opened, open_them, connections in PATTERNS:
            most = []
            for _ in range(tries):
                pids = open_them(shim.port, connections)
                most.append(max(pids.count(pid) for pid in pids))
            found.append(
                Split(
                    loop,
                    opened,
                    connections,
                    tries,
                    sum(m == connections for m in most),
                    sum(m * 8 >= connections * 7 for m in most),
                    statistics.median(m / connections for m in most),
                )
            )
    finally:
        shim.stop()
    return found


HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class _Client(asyncio.Protocol):
    """One keep-alive connection asking for the next tile as soon as an answer is complete;
    past the deadline, for ``/health``, which says which worker it is connected to."""

    def __init__(self, requests: list[bytes], deadline: float, done: asyncio.Future[int]) -> None:
        self.requests = requests
        self.deadline = deadline
        self.done = done
        self.buffer = bytearray()
        self.count = 0
        self.failed = 0
        self.need: int | None = None  # bytes of the answer being read, head included
        self.transport: asyncio.Transport | None = None
        self.asked = False  # for /health
        self.pid = 0  # of the worker that answered /health

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self.transport.write(self.requests[0])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                at = head.index(b"\r\ncontent-length:") + 17
                length = int(head[at : head.index(b"\r\n", at) if b"\r\n" in head[at:] else None])
                self.need = end + 4 + length
                if not head.startswith(b"http/1.1 200"):
                    self.failed += 1
            if len(self.buffer) < self.need:
                return
            answer = bytes(self.buffer[: self.need])
            del self.buffer[: self.need]
            self.need = None
            assert self.transport is not None
            if self.asked:
                body = answer[answer.index(b"\r\n\r\n") + 4 :]
                self.pid = json.loads(body)["process"]["pid"]
                self.transport.close()
                return
            self.count += 1
            if time.monotonic() >= self.deadline:
                self.asked = True
                self.transport.write(HEALTH)
                return
            self.transport.write(self.requests[self.count % len(self.requests)])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.count)


@dataclass(frozen=True)
class Load:
    requests: int
    failed: int
    pids: list[int]  # the worker each connection was served by


async def _load(port: int, connections: int, seconds: float) -> Load:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + seconds
    clients = []
    for i in range(connections):
        paths = TILES[i % len(TILES) :] + TILES[: i % len(TILES)]
        requests = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths]
        done: asyncio.Future[int] = loop.create_future()
        client = _Client(requests, deadline, done)
        clients.append(client)
    socks = _open_together(port, connections)  # as wrk opens its connections
    await asyncio.gather(
        *(
            loop.create_connection(functools.partial(_same, client), sock=sock)
            for client, sock in zip(clients, socks, strict=True)
        )
    )
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), seconds + 30)
    return Load(
        sum(c.count for c in clients), sum(c.failed for c in clients), [c.pid for c in clients]
    )


def _same(client: _Client) -> _Client:
    return client


def _run(coro: Coroutine[Any, Any, Load]) -> Load:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


RETRIES = 3  # runs of a round at most
OTHERS = 0.1  # CPUs other work may keep busy during a round before it is run again
TICK = os.sysconf("SC_CLK_TCK")
IMAGE_MISSES = 'iiif_shim_cache_lookups_total{result="miss",tier="image"}'


def _image_misses(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(IMAGE_MISSES + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _fetch(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    finally:
        conn.close()


def _warm(port: int, limit: float) -> None:
    """Every tile asked of every worker until each has them cached: passes asking each tile 8
    times, each over a fresh connection (which any worker may take), until a pass meets no
    miss of the rendered-image cache (the metrics are summed over the workers), for at most
    ``limit`` seconds."""
    deadline = time.monotonic() + limit
    misses = -1.0
    with ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline:
            list(pool.map(lambda path: _fetch(port, path), TILES * 8))
            now = _image_misses(port)
            if now == misses:
                return
            misses = now
    print(f"warning: still missing the image cache after {limit:g}s of warm-up", file=sys.stderr)


@dataclass(frozen=True)
class Round:
    processes: int
    rps: float
    failed: int
    client_cpu: float  # seconds of CPU the client used, of the round's wall seconds
    shim_us: float  # microseconds of CPU the shim's processes used per request
    split: str  # how many of the connections each worker served, the busier first ("8:0")
    others: float  # CPUs other processes kept busy during the round, on average


def _cpu_times() -> tuple[float, float]:
    """Seconds of CPU time the machine has spent since boot: busy, all (every CPU)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / TICK, sum(fields) / TICK


def _idle_share(seconds: float = 1.0) -> float:
    """The share of the machine's CPU time that was idle over the next ``seconds``."""
    busy, total = _cpu_times()
    time.sleep(seconds)
    busy_after, total_after = _cpu_times()
    return 1 - (busy_after - busy) / max(1e-9, total_after - total)


def _wait_idle(share: float, limit: float = 120.0) -> float:
    """Wait until the machine is at least ``share`` idle (other work shares it), at most
    ``limit`` seconds; the idle share found."""
    deadline = time.monotonic() + limit
    idle = _idle_share()
    while idle < share and time.monotonic() < deadline:
        idle = _idle_share()
    return idle


def throughput(
    tree: Path,
    workdir: Path,
    processes: int,
    connections: int,
    seconds: float,
    warm: float,
    quiet: float,
) -> Round:
    """One round in a fresh server; run again (at most :data:`RETRIES` times) while other work
    kept more than :data:`OTHERS` CPUs busy during it."""
    for _ in range(RETRIES):
        found = _round(tree, workdir, processes, connections, seconds, warm, quiet)
        if found.others <= OTHERS:
            break
    return found


def _round(
    tree: Path,
    workdir: Path,
    processes: int,
    connections: int,
    seconds: float,
    warm: float,
    quiet: float,
) -> Round:
    shim = start(tree, workdir, processes, "auto")
    try:
        _warm(shim.port, warm)
        _wait_idle(quiet)
        cpu = time.process_time()
        shim_cpu = cpu_seconds([shim.proc.pid])
        busy, _ = _cpu_times()
        started = time.monotonic()
        load = _run(_load(shim.port, connections, seconds))
        wall = time.monotonic() - started
        busy = _cpu_times()[0] - busy
        cpu = time.process_time() - cpu
        shim_cpu = cpu_seconds([shim.proc.pid]) - shim_cpu
    finally:
        shim.stop()
    split = sorted((load.pids.count(pid) for pid in set(load.pids)), reverse=True)
    return Round(
        processes,
        load.requests / wall,
        load.failed,
        cpu / wall,
        shim_cpu / load.requests * 1e6,
        ":".join(str(n) for n in split + [0] * (processes - len(split))),
        max(0.0, busy - shim_cpu - cpu) / wall,
    )


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _commit(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--", "iiif_shim"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def _split_table(found: list[Split]) -> list[str]:
    return [
        "| event loop | opened | connections | all on one worker | 7/8 or more on one "
        "| busier worker's share (median) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {s.loop} | {s.opened} | {s.connections} | {s.all_on_one} of {s.tries} | "
            f"{s.lopsided} of {s.tries} | {s.median_share:.0%} |"
            for s in found
        ),
    ]


def _rounds_table(rounds: list[Round]) -> list[str]:
    def cells(n: int) -> str:
        mine = [r for r in rounds if r.processes == n]
        return " | ".join(
            [
                str(n),
                f"{statistics.median(r.rps for r in mine):.0f}",
                ", ".join(f"{r.rps:.0f}" for r in mine),
                str(sum(r.failed for r in mine)),
                ", ".join(f"{r.shim_us:.0f}" for r in mine),
                ", ".join(r.split for r in mine) if n > 1 else "-",
                ", ".join(f"{r.client_cpu:.0%}" for r in mine),
                ", ".join(f"{r.others:.2f}" for r in mine),
            ]
        )

    return [
        "| processes | req/s (median) | rounds (req/s) | failed | shim CPU per request (us) "
        "| connections per worker | client CPU (of one core) | other work (CPUs) |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {cells(n)} |" for n in (1, 2)),
    ]


def _ratio(rounds: list[Round]) -> float:
    one = statistics.median(r.rps for r in rounds if r.processes == 1)
    two = statistics.median(r.rps for r in rounds if r.processes == 2)
    return two / one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose shim to run")
    parser.add_argument(
        "--before", type=Path, help="another checkout to measure alongside, in the same rounds"
    )
    parser.add_argument("--tries", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warm", type=float, default=60.0, help="most seconds of warm-up")
    parser.add_argument(
        "--quiet", type=float, default=0.9, help="idle share of the machine a round waits for"
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="- prints")
    args = parser.parse_args()
    trees = ([args.before] if args.before else []) + [args.tree]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        loads = [_loadavg()]
        found = {
            tree: [
                s for loop in ("asyncio", "uvloop") for s in splits(tree, workdir, loop, args.tries)
            ]
            for tree in trees
        }
        rounds: dict[Path, list[Round]] = {tree: [] for tree in trees}
        for _ in range(args.rounds):  # the builds and process counts alternate
            for tree in trees:
                for processes in (1, 2):
                    rounds[tree].append(
                        throughput(
                            tree,
                            workdir,
                            processes,
                            args.connections,
                            args.seconds,
                            args.warm,
                            args.quiet,
                        )
                    )
        loads.append(_loadavg())
    names = {tree: f"commit {_commit(tree)}" for tree in trees}
    lines = [
        "",
        "## Processes: how connections spread, and what a second process adds",
        "",
        f"Written by `bench/processes.py` (see its docstring) on {time.strftime('%Y-%m-%d')} "
        f"in {(time.monotonic() - started) / 60:.1f} minutes; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average {loads[0]} at "
        f"the start, {loads[1]} at the end (other work shares the machine). "
        + (
            f"Before: {names[args.before]}; now: {names[args.tree]}, measured in the same rounds."
            if args.before
            else f"Measured: {names[args.tree]}."
        ),
        "",
        f"Keep-alive connections to an idle `--processes 2` server, {args.tries} tries each: how "
        "many landed on the busier worker.",
    ]
    for tree in trees:
        label = "Before" if tree == args.before else "Now" if args.before else ""
        lines += [
            "",
            *([f"{label} ({names[tree]}):", ""] if label else []),
            *_split_table(found[tree]),
        ]
    lines += [
        "",
        f"Cached tiles (16 tiles of `chart.jpg`, each worker's cache warm), {args.connections} "
        f"keep-alive connections opened together, {args.seconds:g} s rounds, 1 and 2 processes "
        f"alternating, {args.rounds} rounds, event loop `auto`; each round waited until the "
        f"machine was {args.quiet:.0%} idle (at most 2 minutes), and was run again (up to "
        f"{RETRIES} times) while other work kept more than {OTHERS:g} CPUs busy.",
    ]
    for tree in trees:
        label = "Before" if tree == args.before else "Now" if args.before else ""
        lines += [
            "",
            *([f"{label} ({names[tree]}):", ""] if label else []),
            *_rounds_table(rounds[tree]),
        ]
    lines += [
        "",
        "2 processes / 1: "
        + ", ".join(
            f"**{_ratio(rounds[tree]):.2f}x**"
            + (f" {'before' if tree == args.before else 'now'}" if args.before else "")
            for tree in trees
        )
        + ".",
    ]
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        print(text)
        return
    with open(args.out, "a") as out:
        out.write(text)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
