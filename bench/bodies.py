"""Memory of one request whose upstream answer is large: the rise of the shim process's peak RSS
(VmHWM, read from /proc before and after the request, a fresh shim for each) for a 250 MB TIFF
whose directory is at the end (``info.json`` with and without ``Range``, an image of it) and for
gzip bodies that inflate to 300 MiB, all from ``tests/faulty.py`` over real sockets.

    python bench/bodies.py

Run from a checkout from before upstream bodies were held once to see what they cost then.
Results are in docs/reliability.md ("Upstream bodies").
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import memory_of, start_faulty, start_shim, write_config  # noqa: E402

BIG = 250_000_000
BOMB = 300 * 1024 * 1024
CASES = (
    ("info.json, 250 MB TIFF, directory at the end", f"tailtiff:{BIG}/info.json"),
    ("info.json, the same, Range ignored", f"tailtiffwhole:{BIG}/info.json"),
    ("full/256,/0/default.jpg of it", f"tailtiff:{BIG}/full/256,/0/default.jpg"),
    ("info.json, gzip of 300 MiB of zeros", f"gzipbomb:{BOMB}/info.json"),
    ("info.json, gzip JPEG start + 300 MiB", f"gzipimage:{BOMB}/info.json"),
    ("full/64,/0/default.jpg, gzip JPEG", f"gzipimage:{BOMB}/full/64,/0/default.jpg"),
)
KINDS = ("tailtiff", "tailtiffwhole", "gzipbomb", "gzipimage")


def _peak_mb(pid: int) -> float:
    return memory_of(pid)["VmHWM"] / (1 << 20)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "root").mkdir()
        upstream = start_faulty(work / "root", work)
        base = f"http://127.0.0.1:{upstream.port}"
        backends = "".join(
            f'  {k}: {{type: http, url: "{base}/{k}/{{id}}", timeout: 60}}\n' for k in KINDS
        )
        routes = "".join(
            f'  - {{match: "^{k}:(?P<n>[0-9]+)$", backend: {k}, id: "{{n}}"}}\n' for k in KINDS
        )
        config = write_config(
            work / "shim.yaml",
            "server: {health_interval: 3600, memory_budget: 2147483648}\n"
            "cache: {decoded_bytes: 0}\n"
            f"backends:\n{backends}routes:\n{routes}",
        )
        print(f"{'request':46} {'status':>6} {'seconds':>8} {'peak rise MB':>13}")
        try:
            for label, path in CASES:
                shim = start_shim(config, work)
                try:
                    shim.get("/iiif/3/tailtiff:100000/info.json")
                    shim.get("/iiif/3/tailtiff:100000/full/64,/0/default.jpg")
                    before = _peak_mb(shim.proc.pid)
                    started = time.monotonic()
                    resp = shim.get(f"/iiif/3/{path}", timeout=120)
                    took = time.monotonic() - started
                    rise = _peak_mb(shim.proc.pid) - before
                    print(f"{label:46} {resp.status:>6} {took:>8.2f} {rise:>13.0f}")
                finally:
                    shim.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
