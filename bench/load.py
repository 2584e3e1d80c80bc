"""Load clients and process measurements for ``bench/perf.py``: wrk (duration runs over a list
of request paths, cycled), hey (a fixed number of requests to one URL), CPU time and resident
memory of a process tree from /proc, and py-spy profiles of the shim while a figure runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SWEEP_LUA = BENCH / "sweep.lua"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One client run: throughput, latency percentiles (ms) and failures."""

    rps: float
    requests: int
    errors: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    command: str = ""
    seconds: float = 0.0


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: run `bash bench/perf.sh`, which installs it")
    return found


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(base: str, paths: list[str], seconds: float, connections: int, threads: int = 1) -> Run:
    """``wrk`` for ``seconds`` against ``base`` (scheme://host:port), cycling through ``paths``
    (absolute paths) in the given order, each thread from its own offset."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(paths) + "\n")
    threads = max(1, min(threads, connections))
    args = [
        tool("wrk"),
        "--latency",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(SWEEP_LUA),
        base + paths[0],
    ]
    try:
        out = subprocess.run(
            args,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
            env={**os.environ, "SWEEP_FILE": listing.name},
        ).stdout
    finally:
        os.unlink(listing.name)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    latency = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    command = (
        f"SWEEP_FILE=paths.txt wrk --latency -t {threads} -c {connections} "
        f"-d {max(1, round(seconds))}s -s bench/sweep.lua {base}/..."
    )
    return Run(rps, requests, errors, latency, command, max(1, round(seconds)))


def hey(url: str, requests: int, connections: int) -> Run:
    """``hey -n requests -c connections url``: a fixed number of requests to one URL (rounded
    down to a multiple of ``connections``: each hey worker sends n/c)."""
    requests -= requests % connections
    args = [tool("hey"), "-n", str(requests), "-c", str(connections), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", out))
    latency = {
        p: float(v) * 1000 for p, v in re.findall(r"^\s+(50|90|99)% in ([\d.]+) secs", out, re.M)
    }
    return Run(rps, ok, requests - ok, latency, f"hey -n {requests} -c {connections} {url}")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of ``pids`` and their descendants, in seconds."""
    total = 0
    for root in pids:
        for p in tree(root):
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mb(pids: list[int]) -> float:
    """Resident memory of ``pids`` and their descendants, in MB."""
    total = 0
    for root in pids:
        for p in tree(root):
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
    return total / 1024


class Profiler:
    """``py-spy record`` of a process tree while a figure runs (``--profile``): its stacks
    (py-spy's raw, collapsed format: one ``frame;frame;... count`` a line) per shim, written
    when stopped, for :func:`hot_frames` and any flame-graph tool."""

    def __init__(self, pid: int, out: Path) -> None:
        spy = BENCH.parent / ".venv-bench" / "bin" / "py-spy"
        if not spy.exists():
            raise SystemExit("py-spy is missing: run `bash bench/perf.sh --profile`")
        self.out = out
        self.proc = subprocess.Popen(
            [
                *(str(spy), "record", "--subprocesses", "-p", str(pid)),
                *("-o", str(out), "-r", "200", "-f", "raw"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _package(frame: str) -> str:
    """``aiohttp``, ``iiif_shim``, ``asyncio``, ``PIL``... from a py-spy frame's file."""
    where = frame.rpartition("(")[2].split(":")[0]
    return where.split("/")[0] if "/" in where else where.removesuffix(".py")


def hot_frames(
    stacks: Path, top: int = 20
) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    """Samples of the event-loop threads in a py-spy raw file; the frames most often on their
    stacks (share of those samples, each frame counted once a stack); and where the loop's
    own time went, by package (the innermost frame of each sample)."""
    total = 0
    seen: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not any("run_forever" in f or "Runner.run" in f for f in frames):
            continue  # idle image threads and the like
        total += int(count)
        for frame in set(frames):
            seen[frame] = seen.get(frame, 0) + int(count)
        package = _package(frames[-1])
        own[package] = own.get(package, 0) + int(count)
    ranked = sorted(seen.items(), key=lambda kv: -kv[1])
    skip = (
        "run_forever",
        "run_until_complete",
        "Runner.run",
        "_run_once",
        "Handle._run",
        "<module>",
        "main (",
        "serve (",
        "run (",
        "process ",
        "_run_code",
    )
    rows = [(n / total, f) for f, n in ranked if total and not any(k in f for k in skip)]
    packages = [(n / total, name) for name, n in sorted(own.items(), key=lambda kv: -kv[1])]
    return total, rows[:top], packages[:8]
