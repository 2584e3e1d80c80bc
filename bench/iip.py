"""What the shim costs in front of IIPImage: iiif-shim's ``iip`` backend against iipsrv's own
IIIF endpoint, the same requests, the same iipsrv, in the same run.

Both are asked Image API 2.1 URLs (iipsrv's endpoint speaks 2.x) for the bundled 6000x4000
chart as a pyramidal TIFF with 256-px tiles: a zoom-in session of native tiles, full-resolution
tiles, and 256-px thumbnails. The shim's rendered-image cache is off, so every request goes to
iipsrv (exact tiles and JPEG thumbnails pass through without re-encoding). Appends a section to
``docs/benchmarks.md``.

    bash bench/run.sh     # needs iipsrv, lighttpd and vips: bash deploy/setup.sh test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import tiles
from bench.tiles import CHART, ROOT, Result, median, passes
from tests.servers import IipServer, make_tiff
from tests.support import start_shim, write_config

TILE = 256


def tiles_at(sf: int) -> list[str]:
    return tiles.tiles_at(sf, TILE, width_only=True)


def workloads() -> dict[str, list[str]]:
    session = tiles_at(32) + tiles_at(16) + tiles_at(8) + tiles_at(4)[:24] + tiles_at(1)[100:124]
    return {
        "session": [f"{t}/0/default.jpg" for t in session],
        "deep": [f"{t}/0/default.jpg" for t in tiles_at(1)[::15][:24]],
        "thumbs": ["full/256,/0/default.jpg"] * 24,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    rows: list[tuple[str, int, Result, Result]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tiffs = tmp / "tiff"
        tiffs.mkdir()
        make_tiff(CHART, tiffs / "chart.tif")
        (tmp / "iip").mkdir()
        iip = IipServer(tiffs, tmp / "iip", ready="chart.tif")
        config = write_config(
            tmp / "shim.yaml",
            f"""\
cache: {{image_bytes: 0}}
backends:
  iip: {{type: iip, url: "{iip.url}/fcgi-bin/iipsrv.fcgi", path: "{{id}}.tif"}}
routes:
  - {{backend: iip}}
""",
        )
        shim = start_shim(config, tmp, "--log-level", "warning")
        try:
            direct = f"{iip.url}/iiif/chart.tif"
            proxied = f"http://127.0.0.1:{shim.port}/iiif/2/chart"
            for name, paths in workloads().items():
                peer = median(passes(direct, paths, args.concurrency, args.rounds))
                ours = median(passes(proxied, paths, args.concurrency, args.rounds))
                rows.append((name, len(paths), peer, ours))
                print(
                    f"{name}: iipsrv IIIF {len(paths) / peer.seconds:.1f}, shim over IIP "
                    f"{len(paths) / ours.seconds:.1f} req/s",
                    flush=True,
                )
        finally:
            shim.stop()
            iip.stop()
    lines = [
        "",
        "## iiif-shim in front of IIPImage",
        "",
        "Written by `bench/iip.py`; see its docstring. Same machine and run conditions as above.",
        "The peer is iipsrv's own IIIF 2 endpoint; iiif-shim uses the native IIP protocol "
        "(`iip` backend) to the same iipsrv, with its rendered-image cache off.",
        "",
        "| workload | requests | iipsrv IIIF req/s | shim over IIP req/s | shim / iipsrv "
        "| iipsrv median ms | shim median ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, n, peer, ours in rows:
        lines.append(
            f"| {name} | {n} | {n / peer.seconds:.1f} | {n / ours.seconds:.1f} | "
            f"{peer.seconds / ours.seconds:.2f}x | "
            f"{statistics.median(peer.latencies) * 1000:.1f} | "
            f"{statistics.median(ours.latencies) * 1000:.1f} |"
        )
    with open(args.out, "a") as out:
        out.write("\n".join(lines) + "\n")
    print(f"appended to {args.out} ({os.path.relpath(args.out)})")


if __name__ == "__main__":
    main()
