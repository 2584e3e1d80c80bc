"""Native work really is delegated: counted in what each real server sent.

The legacy server's own access log (lighttpd for iipsrv, nginx for static files and pyramids)
and the shim's per-backend traffic counters (``/health``) show which native calls were made and
how many bytes crossed.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.servers import IipServer
from tests.shims import BackendShim
from tests.support import Process, log_lines

pytestmark = pytest.mark.servers
MASTER_BYTES = 6_000_000  # the chart's pyramidal TIFF is over 12 MB; its JPEG master 2.2 MB


def traffic(shim: BackendShim) -> dict[str, int]:
    health = json.loads(shim.process.get("/health").body)
    backend = health["backends"][shim.name]
    return {"requests": backend["requests"], "bytes": backend["bytes"]}


def moved(shim: BackendShim, path: str) -> dict[str, int]:
    """What the backend sent for one image request (its metadata is fetched first)."""
    identifier = path.split("/")[3]
    assert shim.process.get(f"/iiif/3/{identifier}/info.json").status == 200
    before = traffic(shim)
    resp = shim.process.get(path)
    assert resp.status == 200, resp.text
    after = traffic(shim)
    return {k: after[k] - before[k] for k in after}


def lighttpd_bytes(iip: IipServer, needle: str) -> list[int]:
    """Bytes sent for each logged request containing ``needle`` ('%r %s %b' lines), once the one
    just made is in (lighttpd writes its access log in batches)."""
    lines = log_lines(iip.access_log, needle)
    return [int(line.rsplit(" ", 1)[1]) for line in lines]


def test_iip_thumbnail_is_a_small_export(
    backend_shims: dict[str, BackendShim], iip: IipServer
) -> None:
    shim = backend_shims["iip"]
    got = moved(shim, "/iiif/3/chart/full/256,/0/default.jpg")
    assert got["requests"] == 1 and got["bytes"] < 40_000  # not the master
    # iipsrv fits inside WID x HEI: the larger side is pinned, the other given one spare pixel
    sent = lighttpd_bytes(iip, "FIF=chart.tif&WID=256&HEI=172&CVT=jpeg")
    assert sent and sent[-1] == got["bytes"]  # iipsrv scaled it


def test_iip_exact_tile_is_one_jtl(backend_shims: dict[str, BackendShim], iip: IipServer) -> None:
    shim = backend_shims["iip"]
    got = moved(shim, "/iiif/3/chart/2048,1024,1024,1024/256,256/0/default.jpg")
    assert got["requests"] == 1
    # scale factor 4 of 6 levels is resolution 3; 6000/4 = 1500 wide: 6 columns; row 1, col 2
    assert lighttpd_bytes(iip, "FIF=chart.tif&JTL=3,8")


def test_iip_beyond_max_cvt_stitches_tiles(
    backend_shims: dict[str, BackendShim], iip: IipServer
) -> None:
    shim = backend_shims["iip"]
    resp = shim.process.get("/iiif/3/chart/0,0,5500,300/max/0/default.png")
    assert resp.status == 200 and resp.image().size == (5500, 300)
    tiles = log_lines(iip.access_log, "FIF=chart.tif&JTL=5,", count=22)
    assert len(tiles) >= 22  # 22 full-resolution tiles across, 2 rows: from tiles, not CVT


def test_iiif_upstream_is_asked_for_the_size(
    backend_shims: dict[str, BackendShim], iip: IipServer
) -> None:
    shim = backend_shims["iiif"]
    got = moved(shim, "/iiif/3/chart/full/256,/0/default.jpg")
    assert got["requests"] == 1 and got["bytes"] < 40_000
    assert lighttpd_bytes(iip, "GET /iiif/chart.tif/full/256,171/0/default.jpg")


@pytest.mark.parametrize("backend", ["thumbor", "djatoka", "contentdm"])
def test_scaling_servers_send_the_small_image(
    backend_shims: dict[str, BackendShim], backend: str
) -> None:
    shim = backend_shims[backend]
    got = moved(shim, f"/iiif/3/{shim.validator_id}/full/100,/0/default.jpg")
    assert got["requests"] == 1 and got["bytes"] < 8_000  # the source PNG is 25 kB


@pytest.mark.parametrize(
    ("backend", "prefix"), [("deepzoom", "/dz/chart_files/"), ("zoomify", "/zoomify/chart/")]
)
def test_pyramids_fetch_only_the_tiles_needed(
    backend_shims: dict[str, BackendShim], nginx: Process, backend: str, prefix: str
) -> None:
    shim = backend_shims[backend]
    log = nginx.log.parent / "nginx-access.log"
    assert shim.process.get("/iiif/3/chart/info.json").status == 200  # the metadata, first
    # nginx logs a request as it answers it: what the shim asked is in the log once it answered
    before = len(log_lines(log, prefix, count=0))
    got = moved(shim, "/iiif/3/chart/full/256,/0/default.jpg")
    thumb_tiles = log_lines(log, prefix, count=before + 1)[before:]
    assert 1 <= len(thumb_tiles) <= 2 and got["bytes"] < 60_000  # the 375-px level, Q90
    before = len(log_lines(log, prefix, count=0))
    moved(shim, "/iiif/3/chart/3000,2000,300,200/max/0/default.jpg")
    region_tiles = log_lines(log, prefix, count=before + 1)[before:]
    assert 1 <= len(region_tiles) <= 4  # full resolution, only around the region
    level = re.compile(r"_files/13/|/TileGroup\d+/5-")
    assert all(level.search(line) for line in region_tiles), region_tiles


def test_http_master_is_fetched_once_per_session(
    backend_shims: dict[str, BackendShim], nginx: Process
) -> None:
    shim = backend_shims["http"]
    log = nginx.log.parent / "nginx-access.log"
    needle = "GET /quad.png "
    for tile in ("0,0,150,100", "150,0,150,100", "0,100,150,100", "150,100,150,100"):
        assert shim.process.get(f"/iiif/3/quad/{tile}/75,/0/default.jpg").status == 200
    whole = [line for line in log_lines(log, needle) if '" 200 ' in line]
    assert len(whole) == 1, whole  # decoded once, cut four times
