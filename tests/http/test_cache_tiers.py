"""The cache tiers through real shims: two shims sharing one real redis-server, a Redis that goes
away and comes back, a disk folder across a restart and under its budget, the render lock across
processes, purges (the CLI and ``DELETE /admin/cache``, down to the tiles a pyramid backend
keeps), and what others may leave in a tier: values forged in Redis, disk entries copied, linked,
replaced by pipes and devices, a damaged PDF page, facts that contradict the image. Backend
traffic is counted by the upstream itself (``tests/faulty.py``'s ``/_stats``)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
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
from iiif_shim.cache.entry import (
    FACTS,
    Entry,
    Rejected,
    Slot,
    encode,
    examine,
    source_key,
    valid_name,
)
from iiif_shim.model.facts import SourceInfo
from iiif_shim.model.plan import Rendered
from tests.inprocess import InProcessShim
from tests.support import (
    ROOT,
    Process,
    Response,
    free_port,
    log_lines,
    need_root,
    need_tool,
    nginx_config,
    request,
    start_faulty,
    start_redis,
    start_shim,
    write_config,
)

TOKEN = "purge-token-0123456789"


def decode(slot: Slot, data: bytes, now: float) -> Entry | None:
    """The value ``data`` holds for ``slot``, or ``None`` (rejected, or past its expiry)."""
    found = examine(slot, data, now)
    return None if isinstance(found, Rejected) else found


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("tiers-root")
    for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"):
        Image.new("RGB", (600, 400), (200, 30, 30)).save(root / f"{name}.png")
    Image.effect_noise((1200, 900), 60).convert("RGB").save(root / "noise.jpg", quality=95)
    # metadata a pixel off its master, as a template or Thumbor backend's may be
    (root / "k.json").write_text('{"w": 601, "h": 400}')
    # an upstream IIIF service of one 600x400 image, level 1
    service = root / "m"
    (service / "full" / "max" / "0").mkdir(parents=True)
    Image.new("RGB", (600, 400), (200, 30, 30)).save(service / "full/max/0/default.jpg")
    (service / "info.json").write_text(
        json.dumps(
            {
                "@context": "http://iiif.io/api/image/3/context.json",
                "id": "http://elsewhere/m",
                "type": "ImageService3",
                "protocol": "http://iiif.io/api/image",
                "profile": "level1",
                "width": 600,
                "height": 400,
            }
        )
    )
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


def _metric(shim: Process | InProcessShim, line_start: str) -> float:
    for line in shim.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def _lookups(shim: Process | InProcessShim, tier: str, result: str) -> float:
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


# --- what others leave in a tier -------------------------------------------------------------

BLUE = (30, 30, 220)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (100, 100)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def _rejected(shim: Process | InProcessShim, tier: str, reason: str) -> float:
    return _metric(shim, f'iiif_shim_cache_rejected_total{{reason="{reason}",tier="{tier}"}}')


def _request(shim: Process, path: str) -> Response:
    """A request that must be answered in time (a pipe in the disk tier must not hang it)."""
    return request(shim.port, path, timeout=20)


@pytest.mark.parametrize(("forgery", "reason"), [("garbage", "damaged"), ("another", "misplaced")])
def test_a_value_forged_in_redis_is_a_miss_counted_and_never_copied(
    tmp_path: Path, upstream: Process, redis_server: Process, forgery: str, reason: str
) -> None:
    """Garbage, or an intact entry of another slot (a blue image), written under the Redis key
    of a tile: the tile is rendered again (red), the rejection counted and logged, and neither
    the disk tier nor Redis keeps the forged value."""
    port, prefix, disk = redis_server.port, f"forged-{forgery}:", tmp_path / "disk"
    config = _config(
        tmp_path / "shim.yaml",
        upstream,
        _cache(redis=f"redis://127.0.0.1:{port}/0", redis_prefix=prefix, disk=str(disk)),
    )
    tile, source = TILES[0].format("h.png"), source_key("ok", "h.png")
    shim = start_shim(config, tmp_path)
    try:
        _red(shim.get(tile))
    finally:
        shim.stop()
    client = redis.Redis(port=port)
    (key,) = client.keys(f"{prefix}{source}:img:*")
    slot = Slot(source, key.decode().rsplit(":", 1)[1])
    blue = Rendered(_png(BLUE), "image/jpeg")
    forged = {
        "garbage": os.urandom(3000),
        "another": encode(Slot(source, "0" * 64), blue, time.time() + 600),
    }[forgery]
    client.set(key, forged)
    shutil.rmtree(disk / source)  # the disk tier forgets it: the next read is Redis'
    shim = start_shim(config, tmp_path)
    try:
        resp = _request(shim, tile)
        _red(resp)
        assert _rejected(shim, "redis", reason) == 1
        assert log_lines(shim.log, f"rejected ({reason}")
        on_disk = decode(slot, (disk / source / slot.name).read_bytes(), time.time())
        assert isinstance(on_disk, Rendered) and on_disk.body == resp.body
        in_redis = decode(slot, client.get(key) or b"", time.time())
        assert isinstance(in_redis, Rendered) and in_redis.body == resp.body
    finally:
        shim.stop()
        client.close()


_DISK_ATTACKS = {
    "copy": "misplaced",
    "hardlink": "misplaced",
    "linked_entry": "not_a_file",
    "linked_folder": "not_a_file",
    "fifo": "not_a_file",
    "device": "not_a_file",
    "dev_zero": "not_a_file",
}


@pytest.mark.parametrize("attack", list(_DISK_ATTACKS))
def test_the_disk_tier_reads_only_its_own_entries_as_regular_files(
    tmp_path: Path, upstream: Process, attack: str
) -> None:
    """The entry of one tile is replaced by another tile's entry (copied, hard-linked), by a
    link to an intact entry of that very tile showing a blue image outside the folder, by a
    pipe, a device, a link to /dev/zero; or the source's folder is a link to a folder outside
    holding blue entries of every slot. The tile is rendered again (red), promptly, the
    rejection is counted, nothing outside the folder is read, written or removed."""
    if attack == "device":
        need_root("a device node")
    disk, outside = tmp_path / "disk", tmp_path / "outside"
    config = _config(
        tmp_path / "shim.yaml", upstream, _cache(disk=str(disk), disk_bytes=64 * 1024 * 1024)
    )
    tile, other, source = (
        TILES[0].format("i.png"),
        TILES[1].format("i.png"),
        source_key("ok", "i.png"),
    )
    shim = start_shim(config, tmp_path)
    try:
        _red(shim.get(tile))
        before = set((disk / source).iterdir())
        _red(shim.get(other))
    finally:
        shim.stop()
    folder = disk / source
    (path,) = [p for p in before if p.name != FACTS]
    (second,) = [p for p in folder.iterdir() if p not in before]
    slot = Slot(source, path.name)
    blue = Rendered(_png(BLUE), "image/jpeg")
    outside.mkdir()
    planted: dict[Path, bytes] = {}
    if attack == "copy":
        shutil.copyfile(second, path)
    elif attack == "hardlink":
        path.unlink()
        os.link(second, path)
    elif attack == "linked_entry":
        planted[outside / path.name] = encode(slot, blue)
        path.unlink()
        path.symlink_to(outside / path.name)
    elif attack == "linked_folder":
        for entry in folder.iterdir():
            named = Slot(source, entry.name)
            facts = decode(named, entry.read_bytes(), time.time())
            planted[outside / entry.name] = encode(named, facts if entry.name == FACTS else blue)
        shutil.rmtree(folder)
        folder.symlink_to(outside, target_is_directory=True)
    elif attack == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif attack == "device":
        path.unlink()
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # what /dev/zero is
    else:
        path.unlink()
        path.symlink_to("/dev/zero")
    for where, data in planted.items():
        where.write_bytes(data)
    shim = start_shim(config, tmp_path)
    try:
        _red(_request(shim, tile))
        _red(_request(shim, tile))
        assert _rejected(shim, "disk", _DISK_ATTACKS[attack]) == 1
        assert {p: p.read_bytes() for p in outside.iterdir()} == planted  # untouched
        assert not folder.is_symlink() and path.is_file() and not path.is_symlink()
    finally:
        shim.stop()


def _presentation_config(tmp: Path, disk: Path) -> Path:
    root = tmp / "objects"
    for n, colour in enumerate(((220, 30, 30), (30, 180, 30)), 1):
        (root / "book").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (800, 1000), colour).save(root / "book" / f"p{n}.jpg", quality=92)
    return write_config(
        tmp / "shim.yaml",
        f"""
        server: {{health_interval: 3600}}
        cache: {{disk: "{disk}"}}
        backends:
          objects: {{type: files, root: "{root}"}}
        routes:
          - {{backend: objects}}
        presentation:
          sources:
            scans: {{type: folder, backend: objects}}
        """,
    )


@pytest.mark.parametrize(("damage", "tier", "reason"), [
    ("flipped", "disk", "damaged"),
    ("not_a_jpeg", "disk", "contradicted"),
])  # fmt: skip
def test_a_damaged_page_in_the_disk_tier_is_made_again_for_the_pdf(
    tmp_path: Path, damage: str, tier: str, reason: str
) -> None:
    """The page images of an object's PDF come from the cache tiers. A page entry with a
    flipped byte, or an intact entry of that page whose image is not a JPEG the PDF writer can
    read, is a miss: the page is rendered again and the PDF made, never a 500."""
    disk = tmp_path / "disk"
    config = _presentation_config(tmp_path, disk)
    shim = start_shim(config, tmp_path)
    try:
        first = shim.get("/iiif/presentation/book/pdf")
        assert first.status == 200 and first.body.startswith(b"%PDF-"), first.text
    finally:
        shim.stop()
    pages = [p for p in disk.glob("*/*") if valid_name(p.name) and p.name != FACTS]
    assert len(pages) == 2
    shutil.rmtree(disk / "documents", ignore_errors=True)  # a PDF kept whole: made again
    for page in pages:
        slot = Slot(page.parent.name, page.name)
        data = page.read_bytes()
        if damage == "flipped":
            page.write_bytes(data[:-10] + bytes([data[-10] ^ 0x40]) + data[-9:])
        else:
            page.write_bytes(encode(slot, Rendered(b"<html>not a page</html>", "image/jpeg")))
    shim = start_shim(config, tmp_path)
    try:
        again = _request(shim, "/iiif/presentation/book/pdf")
        assert again.status == 200 and again.body.startswith(b"%PDF-"), again.text
        assert b"/Count 2 >>" in first.body and b"/Count 2 >>" in again.body
        assert _rejected(shim, tier, reason) == 2
        for page in pages:  # the pages kept again are JPEGs
            kept = decode(Slot(page.parent.name, page.name), page.read_bytes(), time.time())
            assert isinstance(kept, Rendered) and kept.body.startswith(b"\xff\xd8")
    finally:
        shim.stop()


_FACTS_FORGERIES = {
    "smaller": ("pipeline", "contradicted"),
    "larger": ("pipeline", "contradicted"),
    "mistyped": ("redis", "unreadable"),
}


@pytest.mark.parametrize("forgery", list(_FACTS_FORGERIES))
def test_facts_in_redis_that_contradict_the_image_are_fetched_again(
    tmp_path: Path, upstream: Process, redis_server: Process, forgery: str
) -> None:
    """The facts of a 600x400 source in Redis say 300x200, or 1200x800, or carry a version
    that is no string: the image is made from facts fetched again from the backend (never a
    500, never a 502 blaming the backend), and Redis holds the backend's facts again."""
    port, prefix = redis_server.port, f"facts-{forgery}:"
    config = _config(
        tmp_path / "shim.yaml",
        upstream,
        _cache(redis=f"redis://127.0.0.1:{port}/0", redis_prefix=prefix),
    )
    source = source_key("ok", "j.png")
    slot, key = Slot(source, FACTS), f"{prefix}{source}:facts"
    shim = start_shim(config, tmp_path)
    try:
        _red(shim.get("/iiif/3/j.png/full/max/0/default.png"))
    finally:
        shim.stop()
    client = redis.Redis(port=port)
    real = decode(slot, client.get(key) or b"", time.time())
    assert isinstance(real, SourceInfo) and (real.width, real.height) == (600, 400)
    wrong = {
        "smaller": SourceInfo(300, 200, real.colour, real.format, real.mode, real.version),
        "larger": SourceInfo(1200, 800, real.colour, real.format, real.mode, real.version),
        "mistyped": SourceInfo(600, 400, version=["not", "a", "string"]),  # type: ignore[arg-type]
    }[forgery]
    client.set(key, encode(slot, wrong, time.time() + 600))
    shim = start_shim(config, tmp_path)
    try:
        for path, size in (
            ("/iiif/3/j.png/full/120,/0/default.png", (120, 80)),
            ("/iiif/3/j.png/full/max/0/default.png", (600, 400)),
        ):
            resp = _request(shim, path)
            _red(resp)
            assert resp.image().size == size
        assert _rejected(shim, *_FACTS_FORGERIES[forgery]) == 1
        info = json.loads(_request(shim, "/iiif/3/j.png/info.json").body)
        assert (info["width"], info["height"]) == (600, 400)
        again = decode(slot, client.get(key) or b"", time.time())
        assert isinstance(again, SourceInfo) and (again.width, again.height) == (600, 400)
    finally:
        shim.stop()
        client.close()


def _facts_config(path: Path, upstream: Process, disk: Path, info: str = "ok") -> Path:
    """Template backends over the upstream: ``meta`` reads a source's size from ``<id>.json``
    (at ``/<info>/``) and asks for its whole master; ``cut`` asks for regions, and is sent
    the whole master whatever it asks; ``masters`` is an upstream IIIF service."""
    base = f"http://127.0.0.1:{upstream.port}"
    size = "width: {json: w}, height: {json: h}"
    return write_config(
        path,
        f"""
        server: {{health_interval: 3600}}
        cache: {{disk: "{disk}", info_ttl: 600}}
        backends:
          meta:
            type: template
            info: {{url: "{base}/{info}/{{id}}.json", {size}}}
            image: {{url: "{base}/ok/{{id}}.png"}}
          cut:
            type: template
            info: {{url: "{base}/ok/{{id}}.json", {size}}}
            image: {{url: "{base}/ok/{{id}}.png?r={{x}},{{y}},{{w}},{{h}}", region: pixels}}
          masters: {{type: iiif, url: "{base}/ok/{{id}}"}}
          ok: {{type: http, url: "{base}/ok/{{id}}"}}
        routes:
          - {{match: "^meta:(?P<rest>.+)$", backend: meta, id: "{{rest}}"}}
          - {{match: "^cut:(?P<rest>.+)$", backend: cut, id: "{{rest}}"}}
          - {{match: "^masters:(?P<rest>.+)$", backend: masters, id: "{{rest}}"}}
          - {{backend: ok}}
        """,
    )


def test_facts_the_backend_stands_by_are_asked_again_at_most_once(
    tmp_path: Path, upstream: Process
) -> None:
    """The metadata says 601x400 for a 600x400 master. A process that had the facts from the
    backend serves every size of it without asking again; one that finds them in the disk
    tier asks once, is told the same and does not ask again; one whose backend cannot be asked
    serves from them as they stand. A region the backend answers with more than asked is its
    own fault (a 502) and asks nothing again."""
    disk = tmp_path / "disk"
    meta = "/ok/k.json"
    sizes = iter(range(100, 400, 10))

    def serve_sizes(shim: InProcessShim, count: int) -> None:
        for width in [next(sizes) for _ in range(count)]:
            resp = shim.get(f"/iiif/3/meta:k/full/{width},/0/default.png")
            _red(resp)
            assert resp.image().width == width

    shim = InProcessShim(_facts_config(tmp_path / "shim.yaml", upstream, disk))
    try:
        before = _sent(upstream, meta)
        serve_sizes(shim, 6)
        assert _sent(upstream, meta) - before == 1
        for _ in range(2):  # the backend sends a whole master for a region: a 502, asked once
            assert shim.get("/iiif/3/cut:k/0,0,100,100/max/0/default.png").status == 502
        assert _sent(upstream, meta) - before == 2
    finally:
        shim.stop()
    shim = InProcessShim(_facts_config(tmp_path / "shim.yaml", upstream, disk))
    try:  # a new process: the facts from the disk tier, asked again once
        before = _sent(upstream, meta)
        serve_sizes(shim, 6)
        assert _sent(upstream, meta) - before == 1
        assert _lookups(shim, "facts_disk", "hit") == 1
    finally:
        shim.stop()
    down = "status/500"
    shim = InProcessShim(_facts_config(tmp_path / "down.yaml", upstream, disk, down))
    try:  # the metadata cannot be had: the facts found stand
        serve_sizes(shim, 3)
        assert _sent(upstream, f"/{down}/k.json") == 1
    finally:
        shim.stop()


def test_an_image_planned_again_has_the_headers_of_its_own_plan(
    tmp_path: Path, upstream: Process
) -> None:
    """The disk tier says a 600x400 source is 1200x800. Half its size is made from the facts
    the backend gives again (300x200), and the response's canonical link and ETag are those
    of that plan: what the same request gets once the facts are right."""
    disk = tmp_path / "disk"
    config = _facts_config(tmp_path / "shim.yaml", upstream, disk)
    path = "/iiif/3/l.png/full/pct:50/0/default.png"
    slot = Slot(source_key("ok", "l.png"), FACTS)
    shim = InProcessShim(config)
    try:
        assert shim.get("/iiif/3/l.png/info.json").status == 200
    finally:
        shim.stop()
    real = decode(slot, (disk / slot.source / FACTS).read_bytes(), time.time())
    assert isinstance(real, SourceInfo) and (real.width, real.height) == (600, 400)
    wrong = SourceInfo(1200, 800, real.colour, real.format, real.mode, real.version)
    (disk / slot.source / FACTS).write_bytes(encode(slot, wrong, time.time() + 600))
    shim = InProcessShim(config)
    try:
        first = shim.get(path)
        _red(first)
        assert first.image().size == (300, 200)
        canonical = '/3/l.png/full/300,200/0/default.png>;rel="canonical"'
        assert canonical in (first.header("Link") or ""), first.header("Link")
        again = shim.get(path)
        assert again.header("ETag") == first.header("ETag") is not None
        assert again.header("Link") == first.header("Link")
        assert again.body == first.body
    finally:
        shim.stop()


def test_facts_of_another_backend_type_are_a_miss(tmp_path: Path, upstream: Process) -> None:
    """The disk tier holds facts of ``masters`` with no native description (written when it
    was a backend of another type, or by another deployment sharing the tier): an IIIF
    backend cannot work from them. They are rejected as unusable and asked again, never a
    500."""
    disk = tmp_path / "disk"
    config = _facts_config(tmp_path / "shim.yaml", upstream, disk)
    folder = DiskCache(disk, 64 * 1024 * 1024)
    folder.open()
    slot = Slot(source_key("masters", "m"), FACTS)
    facts = SourceInfo(600, 400, format="JPEG", mode="RGB", version="x")  # no native
    folder.put(slot, facts, time.time() + 600)
    shim = InProcessShim(config)
    try:
        for path in ("/iiif/3/masters:m/full/max/0/default.jpg", "/iiif/3/masters:m/info.json"):
            resp = shim.get(path)
            assert resp.status == 200, resp.text
        assert _rejected(shim, "disk", "unusable") == 1
        kept = folder.get(slot)
        assert isinstance(kept, SourceInfo) and kept.native is not None
    finally:
        shim.stop()
