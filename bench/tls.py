"""What TLS costs: requests per second for one cached tile over HTTPS and over plain HTTP, from the
same configuration on the same machine. Not a test: it reports, it asserts nothing.

    .venv/bin/python bench/tls.py            # prints a Markdown paragraph and table

One shim process (``--processes 1``) serves the bundled ``chart.jpg`` with and without
``server.tls`` (a certificate of the test CA, ``tests/tls.py``: ECDSA P-256), one after the
other for ``--rounds`` (3) rounds, each in a fresh server warmed until the tile comes from the
rendered-image cache. A lean asyncio client (uvloop when installed) keeps ``--connections`` (8)
connections busy for ``--seconds`` (6): once with keep-alive connections (each asks again as
soon as it is answered), once with a new connection for each request (a full TLS handshake
each time, TLS 1.3, no session resumption). Reported: the median requests per second of each,
and HTTPS as a share of HTTP. The client shares the machine's CPUs with the server: compare
ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import BUNDLED, Process, start_shim, write_config  # noqa: E402
from tests.tls import make_ca  # noqa: E402

TILE = "/iiif/3/chart.jpg/1024,1024,1024,1024/256,/0/default.jpg"


def _config(folder: Path, tls: str) -> Path:
    return write_config(
        folder / f"shim-{'tls' if tls else 'plain'}.yaml",
        f"""\
server:
  access_log: none
{tls}
backends:
  local: {{type: files, root: "{BUNDLED}"}}
routes:
  - {{backend: local}}
""",
    )


async def _one(
    host: str, port: int, context: ssl.SSLContext | None, reuse: bool, until: float
) -> int:
    head = f"GET {TILE} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    done = 0
    reader = writer = None
    while time.monotonic() < until:
        if writer is None:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if context else None
            )
        assert reader is not None
        writer.write(head)
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        done += 1
        if not reuse:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            writer = None
    if writer is not None:
        writer.close()
    return done


async def _load(
    port: int, context: ssl.SSLContext | None, reuse: bool, args: argparse.Namespace
) -> float:
    started = time.monotonic()
    until = started + args.seconds
    counts = await asyncio.gather(
        *(_one("localhost", port, context, reuse, until) for _ in range(args.connections))
    )
    return sum(counts) / (time.monotonic() - started)


def _round(
    config: Path, folder: Path, context: ssl.SSLContext | None, args: argparse.Namespace
) -> dict[bool, float]:
    proc: Process = start_shim(config, folder)
    try:
        for _ in range(3):  # rendered once, then from the cache
            asyncio.run(
                _load(proc.port, context, True, argparse.Namespace(seconds=0.5, connections=1))
            )
        return {
            reuse: asyncio.run(_load(proc.port, context, reuse, args)) for reuse in (True, False)
        }
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    folder = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    ca = make_ca(folder / "ca")
    issued = ca.issue("server")
    client = ssl.create_default_context(cafile=str(ca.root))
    client.set_alpn_protocols(["http/1.1"])
    configs = {
        "http": (_config(folder, ""), None),
        "https": (
            _config(folder, f"  tls: {{cert: '{issued.cert}', key: '{issued.key}'}}"),
            client,
        ),
    }
    results: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in configs}
    for _ in range(args.rounds):
        for name, (config, context) in configs.items():
            for reuse, rate in _round(config, folder, context, args).items():
                results[name][reuse].append(rate)
    median = {k: {r: statistics.median(v) for r, v in by.items()} for k, by in results.items()}
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}; {args.connections} connections, {args.seconds:g} s, "
        f"median of {args.rounds} rounds"
    )
    print("| connections | HTTP req/s | HTTPS req/s | HTTPS / HTTP |")
    print("|---|---|---|---|")
    for reuse, label in ((True, "keep-alive"), (False, "new for each request")):
        http_rate, https_rate = median["http"][reuse], median["https"][reuse]
        print(f"| {label} | {http_rate:.0f} | {https_rate:.0f} | {https_rate / http_rate:.2f} |")


if __name__ == "__main__":
    main()
