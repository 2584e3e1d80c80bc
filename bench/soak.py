"""Soak: minutes of mixed load with injected faults, a backend crash and restart, and config
reloads, against one shim; writes docs/reliability.md.

    bash bench/soak.sh [--minutes 5] [--clients 12]

One shim fronts real servers (the bundled images as files; nginx serving them over ``http`` and
as a DeepZoom pyramid; iipsrv behind lighttpd) and the misbehaving upstream of the tests
(``tests/faulty.py``: refused, reset, stalled, slow, garbage, gzip bombs, a flaky and a failing
backend). Client threads send a mix of good requests (info.json, tiles, thumbnails, rotations,
every format), requests that the faulty backends must fail, and malformed ones. Meanwhile the
script kills iipsrv and restarts it, reloads the configuration with SIGHUP (a valid change, then
a broken file, then the valid one back). It records every answer's status and time, and the
shim's memory, and reports: requests sent, faults injected, answers by status class, any 5xx
other than the intended 502/503/504 (target 0), good requests that failed outside the iipsrv
outage, p50/p99 latency, and resident memory at the start, the end and the peak.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import IipServer, build_pyramids
from tests.support import (
    VALIDATOR_ID,
    Process,
    free_port,
    make_images,
    need_tool,
    nginx_config,
    request,
    start_shim,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
FAULTS = {
    "refuse": "refuse/{id}",
    "reset": "reset/{id}",
    "stall": "stall/{id}",
    "slow": "slow/{id}",
    "garbage": "garbage/{id}",
    "html": "html200/{id}",
    "flaky": "flaky/1/{id}",
    "failing": "status/503/{id}",
}


def config(nginx: int, iip: str, faulty: int, cache_control: str) -> str:
    web = f"http://127.0.0.1:{nginx}"
    fault_backends = "".join(
        f'  f{name}: {{type: http, url: "http://127.0.0.1:{faulty}/{path}", timeout: 2, '
        "connect_timeout: 1, breaker_reset: 3}\n"
        for name, path in FAULTS.items()
    )
    fault_routes = "".join(
        f'  - {{match: "^{name}:(?P<r>[^/]+)$", backend: f{name}, id: "{{r}}"}}\n'
        for name in FAULTS
    )
    return f"""\
server:
  cache_control: "{cache_control}"
  health_interval: 5
  access_log: none
cache: {{image_bytes: 16777216}}
backends:
  files: {{type: files, root: "{{images}}"}}
  http: {{type: http, url: "{web}/{{id}}.png"}}
  dz: {{type: deepzoom, url: "{web}/dz/{{id}}.dzi"}}
  iip: {{type: iip, url: "{iip}/fcgi-bin/iipsrv.fcgi", path: "{{id}}.tif", timeout: 5,
        breaker_reset: 2}}
{fault_backends}routes:
  - {{match: "^http:(?P<r>[^/]+)$", backend: http, id: "{{r}}"}}
  - {{match: "^dz:(?P<r>[^/]+)$", backend: dz, id: "{{r}}"}}
  - {{match: "^iip:(?P<r>[^/]+)$", backend: iip, id: "{{r}}"}}
{fault_routes}  - {{match: "^[^:/]+$", backend: files}}
"""


@dataclass
class Answer:
    kind: str  # good, fault, malformed
    backend: str
    path: str
    status: int
    seconds: float
    at: float


GOOD_IDS = {  # images at least 1000 px a side, so every tile asked for lies inside them
    "files": ["chart", VALIDATOR_ID],
    "http": [f"http:{VALIDATOR_ID}"],
    "dz": [f"dz:{VALIDATOR_ID}", "dz:chart"],
    "iip": [f"iip:{VALIDATOR_ID}", "iip:chart"],
}


def good_path(rng: random.Random) -> tuple[str, str]:
    backend = rng.choice(list(GOOD_IDS))
    ident = rng.choice(GOOD_IDS[backend]).replace(":", "%3A")
    version = rng.choice(["3", "2"])
    roll = rng.random()
    if roll < 0.2:
        return backend, f"/iiif/{version}/{ident}/info.json"
    if roll < 0.7:  # a tile somewhere
        s = rng.choice([64, 128, 256])
        x, y = rng.randrange(0, 1000 - s), rng.randrange(0, 1000 - s)
        return backend, f"/iiif/{version}/{ident}/{x},{y},{s},{s}/{s // 2},/0/default.jpg"
    rotation = rng.choice(["0", "90", "!180", "22.5", "!7"])
    quality = rng.choice(["default", "gray", "bitonal"])
    fmt = rng.choice(["jpg", "png", "webp", "gif"])
    size = rng.choice([64, 100, 150])
    return backend, f"/iiif/{version}/{ident}/full/{size},/{rotation}/{quality}.{fmt}"


def fault_path(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(list(FAULTS))
    return f"f{name}", f"/iiif/3/{name}%3Aquad.png/full/64,/0/default.jpg"


MALFORMED = [
    "/iiif/3/quad/full/nope/0/default.jpg",
    "/iiif/3/quad/-1,0,5,5/max/0/default.jpg",
    "/iiif/3/..%2F..%2Fetc%2Fpasswd/info.json",
    "/iiif/3/no-such-image/full/max/0/default.jpg",
    "/iiif/9/quad/info.json",
    "/iiif/3/quad/full/max/0/default.bmp",
]


def client(port: int, seed: int, until: float, answers: list[Answer], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        roll = rng.random()
        if roll < 0.7:
            kind, (backend, path) = "good", good_path(rng)
        elif roll < 0.9:
            kind, (backend, path) = "fault", fault_path(rng)
        else:
            kind, backend, path = "malformed", "-", rng.choice(MALFORMED)
        started = time.monotonic()
        try:
            status = request(port, path, timeout=60).status
        except OSError:
            status = -1
        with lock:
            answers.append(Answer(kind, backend, path, status, time.monotonic() - started, started))


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    duration = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="iiif-soak-") as tmp_name:
        tmp = Path(tmp_name)
        images = make_images(tmp / "images")
        pyramids = build_pyramids(images, tmp / "pyramids")
        (tmp / "nginx").mkdir()
        nginx_port = free_port()
        conf = nginx_config(images, nginx_port, tmp / "nginx", {"/dz/": pyramids / "dz"})
        nginx = Process(
            [need_tool("nginx", "/usr/sbin/nginx"), "-c", str(conf), "-p", str(tmp / "nginx")],
            nginx_port,
            tmp / "nginx" / "out.log",
        )
        (tmp / "iip").mkdir()
        iip = IipServer(pyramids / "tiff", tmp / "iip")
        faulty_port = free_port()
        command = [sys.executable, "-m", "tests.faulty", "--port", str(faulty_port)]
        faulty = Process(
            [*command, "--root", str(images)],
            faulty_port,
            tmp / "faulty.log",
            cwd=ROOT,
        )
        text = config(nginx_port, iip.url, faulty_port, "public, max-age=60")
        shim_config = write_config(tmp / "shim.yaml", text.replace("{images}", str(images)))
        shim = start_shim(shim_config, tmp)
        events: list[tuple[float, str]] = []
        answers: list[Answer] = []
        lock = threading.Lock()
        try:
            rss_start = rss_mb(shim.proc.pid)
            t0 = time.monotonic()
            until = t0 + duration
            threads = [
                threading.Thread(target=client, args=(shim.port, i, until, answers, lock))
                for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            outage: tuple[float, float] = (0.0, 0.0)
            schedule = [
                (0.30, "kill iipsrv"),
                (0.30 + 15 / duration, "restart iipsrv"),
                (0.50, "reload: valid change"),
                (0.60, "reload: broken file"),
                (0.65, "reload: valid file back"),
            ]
            for fraction, event in schedule:
                time.sleep(max(0.0, t0 + fraction * duration - time.monotonic()))
                events.append((time.monotonic() - t0, event))
                if event == "kill iipsrv":
                    iip.kill_iipsrv()
                    outage = (time.monotonic(), 0.0)
                elif event == "restart iipsrv":
                    iip.restart_iipsrv()
                    outage = (outage[0], time.monotonic() + 5)  # breaker_reset and a trial
                elif event == "reload: valid change":
                    shim_config.write_text(
                        config(nginx_port, iip.url, faulty_port, "public, max-age=120").replace(
                            "{images}", str(images)
                        )
                    )
                    shim.proc.send_signal(signal.SIGHUP)
                elif event == "reload: broken file":
                    good = shim_config.read_text()
                    shim_config.write_text("backends: {x: {type: nope}}\nroutes: []\n")
                    shim.proc.send_signal(signal.SIGHUP)
                else:
                    shim_config.write_text(good)
                    shim.proc.send_signal(signal.SIGHUP)
            for t in threads:
                t.join()
            rss_end, rss_peak = rss_mb(shim.proc.pid), rss_mb(shim.proc.pid, "VmHWM")
            cache_control = request(shim.port, "/iiif/3/quad/info.json").headers.get(
                "Cache-Control"
            )
            alive = shim.proc.poll() is None
            log = shim.log.read_text()
        finally:
            shim.stop()
            faulty.stop()
            iip.stop()
            nginx.stop()
    report(args, answers, events, outage, t0, (rss_start, rss_end, rss_peak), alive, log)
    print(f"wrote {args.out}; cache_control after the reloads: {cache_control}")


KEPT = "## Upstream bodies"  # where the sections of docs/reliability.md soak.py keeps begin


def report(
    args: argparse.Namespace,
    answers: list[Answer],
    events: list[tuple[float, str]],
    outage: tuple[float, float],
    t0: float,
    rss: tuple[float, float, float],
    alive: bool,
    log: str,
) -> None:
    by_class = Counter(f"{a.status // 100}xx" if a.status > 0 else "no answer" for a in answers)
    by_status = Counter(a.status for a in answers)
    unexpected = [a for a in answers if a.status >= 500 and a.status not in (502, 503, 504)]
    unexpected += [a for a in answers if a.status < 0]
    in_outage = lambda a: a.backend == "iip" and outage[0] <= a.at <= outage[1]  # noqa: E731
    good_failed = [a for a in answers if a.kind == "good" and a.status >= 500 and not in_outage(a)]
    faults_ok = [a for a in answers if a.kind == "fault" and a.status in (200, 502, 503, 504)]
    faults = [a for a in answers if a.kind == "fault"]
    good = [a for a in answers if a.kind == "good"]
    malformed = [a for a in answers if a.kind == "malformed"]

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0

    lines = [
        "# Reliability: a soak run",
        "",
        "Written by `bash bench/soak.sh` (`bench/soak.py`; its docstring has the method). "
        f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"Python {platform.python_version()}: {args.minutes:g} minutes, {args.clients} client "
        "threads, one shim over real servers (files, nginx as `http` and DeepZoom, iipsrv behind "
        "lighttpd) and the misbehaving upstream of the tests (`tests/faulty.py`).",
        "",
        "Command: `bash bench/soak.sh " + f"--minutes {args.minutes:g} --clients {args.clients}`",
        "",
        "## Events",
        "",
        *(f"- at {at:.0f} s: {event}" for at, event in events),
        "",
        "## Answers",
        "",
        f"- requests sent: **{len(answers)}** ({len(answers) / (args.minutes * 60):.0f}/s)",
        f"- faults injected: **{len(faults)}** requests to faulty backends "
        f"({', '.join(sorted(FAULTS))}), {len(malformed)} malformed requests, "
        "1 backend crash and restart, 3 reloads (one refused)",
        "- by status class: " + ", ".join(f"{k}: {v}" for k, v in sorted(by_class.items())),
        "- by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items())),
        f"- **5xx other than 502/503/504, or no answer: {len(unexpected)}** (target 0)",
        f"- good requests that failed outside the iipsrv outage: {len(good_failed)}; "
        f"good requests answered 4xx: {sum(400 <= a.status < 500 for a in good)}",
        f"- faulty-backend requests answered 200/502/503/504: {len(faults_ok)} of {len(faults)}",
        f"- malformed requests answered 4xx: "
        f"{sum(400 <= a.status < 500 for a in malformed)} of {len(malformed)}",
        f"- the shim was still running at the end: {'yes' if alive else 'NO'}; the broken "
        f"file's problems were logged: {'yes' if 'reload refused' in log else 'NO'}",
        "",
        "## Latency (ms)",
        "",
        "| requests | count | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for name, group in (
        ("good", [a for a in answers if a.kind == "good"]),
        ("faulty backends", faults),
        ("malformed", malformed),
        ("all", answers),
    ):
        times = [a.seconds for a in group]
        if times:
            lines.append(
                f"| {name} | {len(times)} | {statistics.median(times) * 1000:.0f} | "
                f"{pct(times, 99):.0f} | {max(times) * 1000:.0f} |"
            )
    lines += [
        "",
        "## Memory (resident, MB)",
        "",
        f"start {rss[0]:.0f}, end {rss[1]:.0f}, peak {rss[2]:.0f}.",
        "",
    ]
    odd = unexpected + [a for a in good if 400 <= a.status < 500]
    if odd:
        lines += ["## Unexpected answers", ""]
        lines += [f"- {a.status} {a.kind} {a.path} at {a.at - t0:.1f} s" for a in odd[:50]]
    old = args.out.read_text() if args.out.exists() else ""
    kept = old[old.index(KEPT) :] if KEPT in old else ""  # sections other benches wrote
    args.out.write_text("\n".join(lines) + "\n" + kept)
    print(json.dumps({"requests": len(answers), "unexpected": len(unexpected)}))


if __name__ == "__main__":
    main()
