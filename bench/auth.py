"""What access control costs: tiles per second of one image on a public route and on a restricted
route with a valid login cookie, from one server in the same run. Not a test: it reports, it
asserts nothing.

    .venv/bin/python bench/auth.py            # prints a Markdown paragraph and table

One shim process (``--processes 1``) serves the bundled ``chart.jpg`` twice: as ``chart.jpg``
(public) and as ``staff/chart.jpg`` (policy ``staff``, a login; ``tests/http/auth_support.py``).
The client logs in over HTTP as a browser does, then keeps ``--connections`` (8) keep-alive
connections busy for ``--seconds`` (6) asking for one tile, public and restricted in turn, for
``--rounds`` (3) rounds. Two kinds of tile: a cached one (the rendered-image cache answers: the
gate's check, an HMAC and a look in the revocation set, is the largest share it can be) and a
rendered one (``--rendered``: the cache off, each tile decoded and encoded). The client shares
the machine's CPUs with the server: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.http.auth_support import auth_config, login  # noqa: E402
from tests.support import BUNDLED, Process, start_shim  # noqa: E402

TILE = "1024,1024,1024,1024/256,/0/default.jpg"
PATHS = {
    "public": f"/iiif/3/chart.jpg/{TILE}",
    "restricted": f"/iiif/3/staff%2Fchart.jpg/{TILE}",
}


async def _one(port: int, path: str, cookie: str, until: float) -> int:
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n").encode()
    done = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            writer.write(head)
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"{path}: {status.decode().strip()}")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


async def _load(port: int, path: str, cookie: str, seconds: float, connections: int) -> float:
    started = time.monotonic()
    until = started + seconds
    counts = await asyncio.gather(*(_one(port, path, cookie, until) for _ in range(connections)))
    return sum(counts) / (time.monotonic() - started)


def _measure(args: argparse.Namespace, rendered: bool, folder: Path) -> dict[str, list[float]]:
    cache = {"image_bytes": 0} if rendered else None  # 0: no rendered-image cache
    config = auth_config(
        folder / ("rendered" if rendered else "cached"),
        BUNDLED,
        server={"access_log": "none"},
        cache=cache,
    )
    proc: Process = start_shim(config, folder)
    try:
        cookie = f"iiif-shim-auth-staff={login(proc.port)}"
        for path in PATHS.values():  # warm: decoded (and, unless rendered, kept)
            asyncio.run(_load(proc.port, path, cookie, 0.5, 1))
        rates: dict[str, list[float]] = {name: [] for name in PATHS}
        for _ in range(args.rounds):
            for name, path in PATHS.items():
                rate = asyncio.run(_load(proc.port, path, cookie, args.seconds, args.connections))
                rates[name].append(rate)
        return rates
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
    folder = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.connections} connections, {args.seconds:g} s, median of {args.rounds} rounds"
    )
    print("| tile | public tiles/s | restricted tiles/s (cookie) | restricted / public |")
    print("|---|---|---|---|")
    for rendered in (False, True):
        rates = _measure(args, rendered, folder)
        public = statistics.median(rates["public"])
        restricted = statistics.median(rates["restricted"])
        label = "rendered (cache off)" if rendered else "cached"
        print(f"| {label} | {public:.0f} | {restricted:.0f} | {restricted / public:.2f} |")


if __name__ == "__main__":
    main()
