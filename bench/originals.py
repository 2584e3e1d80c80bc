"""Time and memory of ``full/max/0/default.jpg`` of a 48 MP JPEG master (``files`` backend), as
the shim serves it: the master's own bytes (``core/passthrough.py``), or, run from a checkout
before originals were passed through, decoded and encoded again.

    python bench/originals.py [--loop asyncio|uvloop] [--repeat 5]

Prints the median time of a request, the body's size, whether it is the master's bytes, and the
server process's peak RSS (VmHWM) after the requests, above its RSS before them. Results are in
docs/image-api.md ("Originals as they are").
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import start_shim, write_config  # noqa: E402


def _master(path: Path) -> None:
    """8000x6000, smooth with some grain (a photograph's size, not a noise field's)."""
    small = Image.effect_noise((800, 600), 60).convert("RGB")
    big = small.resize((8000, 6000), Image.Resampling.BICUBIC)
    big = big.filter(ImageFilter.GaussianBlur(2))
    big.save(path, quality=90)


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "masters").mkdir()
        master = tmp / "masters" / "photo.jpg"
        _master(master)
        config = write_config(
            tmp / "shim.yaml",
            f"""
            server: {{event_loop: {args.loop}, memory_budget: 4294967296}}
            cache: {{image_bytes: 0, decoded_bytes: 0}}
            backends:
              local: {{type: files, root: "{tmp / "masters"}"}}
            routes:
              - {{backend: local}}
            """,
        )
        shim = start_shim(config, tmp)
        try:
            pid = shim.proc.pid
            shim.get("/iiif/3/photo.jpg/info.json")
            rss_before = _kib(pid, "VmRSS")
            times, body = [], b""
            for _ in range(args.repeat):
                conn = http.client.HTTPConnection("127.0.0.1", shim.port, timeout=120)
                started = time.perf_counter()
                conn.request("GET", "/iiif/3/photo.jpg/full/max/0/default.jpg")
                resp = conn.getresponse()
                body = resp.read()
                times.append(time.perf_counter() - started)
                conn.close()
                assert resp.status == 200, resp.status
            peak = _kib(pid, "VmHWM")
        finally:
            shim.stop()
        same = body == master.read_bytes()
        print(
            f"loop={args.loop} master={master.stat().st_size / 1e6:.1f} MB "
            f"median={statistics.median(times) * 1000:.0f} ms "
            f"body={len(body) / 1e6:.1f} MB identical={same} "
            f"peak_rss_above_start={(peak - rss_before) / 1024:.0f} MiB"
        )


if __name__ == "__main__":
    main()
