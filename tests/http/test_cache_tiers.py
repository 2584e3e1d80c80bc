"""The cache tiers through real shims: two shims sharing one real redis-server, a Redis that goes
away and comes back, a disk folder across a restart and under its budget, the render lock across
processes, and purges (the CLI and ``DELETE /admin/cache``, down to the tiles a pyramid backend
keeps). Backend traffic is counted by the upstream itself (``tests/faulty.py``'s ``/_stats``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image

from iiif_shim.cache.disk import DiskCache
from iiif_shim.cache.entry import source_key
from tests.support import (
    ROOT,
    Process,
    Response,
    free_port,
    need_tool,
    nginx_config,
    request,
    start_faulty,
    start_redis,
    start_shim,
    write_config,
)

TOKEN = "purge-token-0123456789"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("tiers-root")
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        Image.new("RGB", (600, 400), (200, 30, 30)).save(root / f"{name}.png")
    Image.effect_noise((1200, 900), 60).convert("RGB").save(root / "noise.jpg", quality=95)
    proc = start_faulty(root, tmp_path_factory.mktemp("tiers-upstream"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def _config(path: Path, upstream: Process, cache: str) -> Path:
    base = f"http://127.0.0.1:{upstream.port}"
    return write_config(
        path,
        f"""
        server: {{health_interval: 3600}}
        cache:
        {cache}
        backends:
          ok: {{type: http, url: "{base}/ok/{{id}}", timeout: 10}}
          slow: {{type: http, url: "{base}/delay/1/{{id}}", timeout: 10}}
        routes:
          - {{match: "^slow:(?P<rest>.+)$", backend: slow, id: "{{rest}}"}}
          - {{backend: ok}}
        """,
    )


def _cache(**keys: object) -> str:
    return "".join(f"  {k}: {json.dumps(v)}\n        " for k, v in keys.items())


def _sent(upstream: Process, path: str | None = None) -> int:
    stats = json.loads(request(upstream.port, "/_stats").body)
    return int(stats["total"] if path is None else stats["paths"].get(path, 0))


def _metric(shim: Process, line_start: str) -> float:
    for line in shim.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def _lookups(shim: Process, tier: str, result: str) -> float:
    return _metric(shim, f'iiif_shim_cache_lookups_total{{result="{result}",tier="{tier}"}}')


def _red(resp: Response) -> None:
    assert resp.status == 200, (resp.status, resp.text)
    im = resp.image().convert("RGB")
    r, g, b = im.getpixel((im.width // 2, im.height // 2))
    assert r > 150 and g < 80 and b < 80


TILES = [f"/iiif/3/{{}}/{x},0,200,200/100,/0/default.jpg" for x in (0, 200, 400)] + [
    "/iiif/3/{}/full/120,/0/default.png"
]


def test_a_second_shim_is_served_from_redis(
    tmp_path: Path, upstream: Process, redis_server: Process
) -> None:
    cache = _cache(redis=f"redis://127.0.0.1:{redis_server.port}/0", redis_prefix="two:")
    config = _config(tmp_path / "shim.yaml", upstream, cache)
    first, second = start_shim(config, tmp_path), start_shim(config, tmp_path)
    try:
        before = _sent(upstream)
        for tile in TILES:
            _red(first.get(tile.format("a.png")))
        asked = _sent(upstream) - before
        assert asked >= 2  # the facts and the master
        for tile in TILES:
            _red(second.get(tile.format("a.png")))
        assert _sent(upstream) - before == asked  # nothing more asked of the backend
        assert _lookups(second, "redis", "hit") == len(TILES)
        assert _lookups(second, "facts_redis", "hit") == 1
    finally:
        first.stop()
        second.stop()


def test_a_redis_outage_degrades_and_redis_is_used_again(tmp_path: Path, upstream: Process) -> None:
    server = start_redis(tmp_path / "redis")
    port = server.port
    cache = _cache(redis=f"redis://127.0.0.1:{port}/0", redis_retry=0.2, redis_timeout=0.2)
    shim = start_shim(_config(tmp_path / "shim.yaml", upstream, cache), tmp_path)
    again: Process | None = None
    try:
        _red(shim.get(TILES[0].format("b.png")))
        server.stop()
        for tile in TILES[1:]:
            _red(shim.get(tile.format("b.png")))  # rendered here, no error
        _red(shim.get(TILES[0].format("c.png")))
        errors = [
            line
            for line in shim.get("/metrics").text.splitlines()
            if line.startswith("iiif_shim_redis_errors_total{")
        ]
        assert errors and sum(float(line.split()[-1]) for line in errors) >= 1, errors
        again = start_redis(tmp_path / "redis2", port)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=port)
        width = 50
        while time.monotonic() < deadline and not client.keys("*:img:*"):
            width += 1  # a new image each time: rendered, then offered to Redis
            _red(shim.get(f"/iiif/3/d.png/full/{width},/0/default.jpg"))
            time.sleep(0.05)
        assert client.keys("*:img:*"), "Redis not used again after it came back"
        lines = shim.log.read_text().splitlines()
        assert len([line for line in lines if "Redis at" in line and "failed (" in line]) == 1
        assert any("Redis at" in line and "answers again" in line for line in lines)
    finally:
        shim.stop()
        server.stop()
        if again is not None:
            again.stop()


def test_the_disk_tier_survives_a_restart_and_keeps_its_budget(
    tmp_path: Path, upstream: Process
) -> None:
    budget = 1024 * 1024
    folder = tmp_path / "disk"
    config = _config(tmp_path / "shim.yaml", upstream, _cache(disk=str(folder), disk_bytes=budget))
    shim = start_shim(config, tmp_path)
    _red(shim.get(TILES[0].format("e.png")))
    shim.stop()
    shim = start_shim(config, tmp_path)  # a restart: memory empty, the folder kept
    try:
        before = _sent(upstream, "/ok/e.png")
        _red(shim.get(TILES[0].format("e.png")))
        assert _lookups(shim, "disk", "hit") == 1
        assert _sent(upstream, "/ok/e.png") - before <= 1  # the facts at most, never the master
        for width in range(300, 600, 10):  # 30 noisy JPEGs, well over the budget together
            resp = shim.get(f"/iiif/3/noise.jpg/full/{width},/0/default.jpg")
            assert resp.status == 200 and resp.image().width == width
        assert sum(p.stat().st_size for p in folder.glob("*/*")) <= budget
        assert DiskCache(folder, budget).size() <= budget
        resp = shim.get("/iiif/3/noise.jpg/full/590,/0/default.jpg")  # the newest stayed
        assert resp.status == 200
        hits = _lookups(shim, "disk", "hit")
        shim.stop()
        shim = start_shim(config, tmp_path)
        assert shim.get("/iiif/3/noise.jpg/full/590,/0/default.jpg").status == 200
        assert _lookups(shim, "disk", "hit") == 1 and hits == 1
    finally:
        shim.stop()


def test_concurrent_misses_in_two_shims_make_one_backend_render(
    tmp_path: Path, upstream: Process, redis_server: Process
) -> None:
    """Every request for a ``slow:`` image takes the upstream a second, so all twenty overlap;
    without the lock each shim would fetch the facts and the master itself."""
    cache = _cache(redis=f"redis://127.0.0.1:{redis_server.port}/0", redis_prefix="lock:")
    config = _config(tmp_path / "shim.yaml", upstream, cache)
    shims = [start_shim(config, tmp_path), start_shim(config, tmp_path)]
    try:
        path = "/iiif/3/slow:f.png/0,0,300,300/150,/0/default.jpg"
        before = _sent(upstream, "/delay/1/f.png")
        results: list[int] = []

        def fetch(shim: Process) -> None:
            resp = shim.get(path)
            _red(resp)
            results.append(resp.status)

        threads = [threading.Thread(target=fetch, args=(shims[i % 2],)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [200] * 20
        assert _sent(upstream, "/delay/1/f.png") - before == 2  # one facts read, one master
        assert [_lookups(s, "redis", "miss") for s in shims] == [1, 1]  # one flight each
    finally:
        for shim in shims:
            shim.stop()


def _keys(port: int, pattern: str) -> list[bytes]:
    return list(redis.Redis(port=port).scan_iter(match=pattern))


def test_purge_by_endpoint_and_cli(
    tmp_path: Path, upstream: Process, redis_server: Process
) -> None:
    port = redis_server.port
    folder = tmp_path / "disk"
    cache = _cache(
        disk=str(folder),
        redis=f"redis://127.0.0.1:{port}/0",
        redis_prefix="purge:",
        purge_token=TOKEN,
    )
    config = _config(tmp_path / "shim.yaml", upstream, cache)
    off = _config(tmp_path / "off.yaml", upstream, _cache(redis_prefix="off:"))
    shim, other, plain = (
        start_shim(config, tmp_path),
        start_shim(config, tmp_path),
        start_shim(off, tmp_path),
    )
    source = source_key("ok", "g.png")
    tile = TILES[0].format("g.png")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert plain.get("/admin/cache/g.png", method="DELETE", headers=auth).status == 404
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"X": "y"}):
            resp = shim.get("/admin/cache/g.png", method="DELETE", headers=headers)
            assert resp.status == 401 and resp.header("WWW-Authenticate") is not None
            assert resp.header("Access-Control-Allow-Origin") == "*"

        def rendered_everywhere() -> None:
            _red(shim.get(tile))
            _red(other.get(tile))
            assert list((folder / source).iterdir())
            assert _keys(port, f"purge:{source}:img:*")
            assert _keys(port, f"purge:{source}:facts")

        def gone_everywhere() -> None:
            assert not (folder / source).exists()
            assert not _keys(port, f"purge:{source}:*")

        def dropped_from_memory(shim: Process) -> None:
            """The process's next request for the tile misses its memory (it heard)."""
            deadline = time.monotonic() + 5  # purges reach other processes within a second
            while time.monotonic() < deadline:
                misses = _lookups(shim, "image", "miss")
                _red(shim.get(tile))
                if _lookups(shim, "image", "miss") > misses:
                    return
                time.sleep(0.2)
            raise AssertionError("the purge did not reach the process's memory")

        rendered_everywhere()
        resp = shim.get("/admin/cache/g.png", method="DELETE", headers=auth)
        assert resp.status == 200, resp.text
        report = json.loads(resp.body)
        # the image and the source's facts, on disk and in Redis
        assert report["purged"] == "g.png" and report["disk"] == 2 and report["redis"] >= 2
        gone_everywhere()
        before = _sent(upstream, "/ok/g.png")
        dropped_from_memory(other)  # the other process heard of it
        dropped_from_memory(shim)
        assert _sent(upstream, "/ok/g.png") > before  # rendered again from the backend

        rendered_everywhere()
        cli = subprocess.run(
            [sys.executable, "-m", "iiif_shim", "purge", "--config", str(config), "g.png"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert "disk: 2 entries removed" in cli.stdout and "told through Redis" in cli.stdout
        gone_everywhere()
        before = _sent(upstream, "/ok/g.png")
        dropped_from_memory(shim)
        dropped_from_memory(other)
        assert _sent(upstream, "/ok/g.png") > before

        rendered_everywhere()
        resp = shim.get("/admin/cache", method="DELETE", headers=auth)
        assert resp.status == 200 and json.loads(resp.body)["purged"] == "*"
        gone_everywhere()
        assert not list(folder.glob("*/*"))
    finally:
        for proc in (shim, other, plain):
            proc.stop()


def test_purge_cli_without_shared_tiers_points_to_the_endpoint(
    tmp_path: Path, upstream: Process
) -> None:
    config = _config(tmp_path / "shim.yaml", upstream, _cache(purge_token=TOKEN))
    cli = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "purge", "--config", str(config), "--all"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert cli.returncode != 0
    assert "cannot be reached" in cli.stderr and "DELETE /admin/cache" in cli.stderr


def _colour(resp: Response) -> tuple[int, ...]:
    assert resp.status == 200, resp.text
    im = resp.image().convert("RGB")
    return tuple(im.getpixel((im.width // 2, im.height // 2)))  # type: ignore[arg-type]


def _near(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 12 for x, y in zip(a, b, strict=True))


def test_a_purge_reaches_the_tiles_a_pyramid_backend_keeps(tmp_path: Path) -> None:
    """A pyramid backend keeps the upstream tiles it fetched. A purge must drop them with the
    rest: once the image changes upstream and is purged, a region stitched again shows the new
    tiles, never the old ones kept under their URLs."""
    vips, nginx = need_tool("vips"), need_tool("nginx", "/usr/sbin/nginx")
    red, blue = (220, 30, 30), (30, 30, 220)
    master = tmp_path / "red.png"
    Image.new("RGB", (1000, 1000), red).save(master)
    site = tmp_path / "site"
    site.mkdir()
    subprocess.run(
        [vips, "dzsave", str(master), str(site / "p"), "--layout", "dz", "--suffix", ".png",
         "--tile-size", "256", "--overlap", "0"],
        check=True,
    )  # fmt: skip
    port = free_port()
    work = tmp_path / "nginx"
    work.mkdir()
    server = Process([nginx, "-c", str(nginx_config(site, port, work)), "-p", str(work)], port,
                     work / "out.log")  # fmt: skip
    config = write_config(
        tmp_path / "shim.yaml",
        f"""
        server: {{health_interval: 3600}}
        cache: {{purge_token: "{TOKEN}"}}
        backends:
          dz: {{type: deepzoom, url: "http://127.0.0.1:{port}/{{id}}.dzi"}}
        routes:
          - {{backend: dz}}
        """,
    )
    shim = start_shim(config, tmp_path)
    try:
        region = "/iiif/3/p/100,100,400,400/max/0/default.png"  # four tiles, stitched
        assert _near(_colour(shim.get(region)), red)
        for tile in (site / "p_files").rglob("*.png"):  # the image changes upstream
            with Image.open(tile) as im:
                size = im.size
            Image.new("RGB", size, blue).save(tile)
        assert _near(_colour(shim.get(region)), red)  # kept, as it should be until a purge
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert shim.get("/admin/cache/p", method="DELETE", headers=auth).status == 200
        assert _near(_colour(shim.get(region)), blue)
    finally:
        shim.stop()
        server.stop()
