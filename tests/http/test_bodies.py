"""Upstream bodies cost at most about their size, and only when their pixels are needed.

A shim process of its own for each measurement (its peak resident memory, VmHWM, is read from
``/proc`` before and after one request) in front of ``tests/faulty.py``: a 250 MB TIFF whose
directory is at the end (served with and without ``Range``), and gzip bodies that inflate to
300 MiB. Memory, not time, is what is asserted, with generous margins. Then what a header read by
ranges asks for (requests and bytes counted by the faulty server) for masters whose header runs
past the first bytes; compressed answers by what they are (a catalogue inflated, an image never,
bytes after the compressed stream refused); a first chunk of two bytes; spill files neither kept
open nor mapped by the decoded cache; a spill folder without room; and the parts reader itself.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from iiif_shim.imaging.fetched import Missing, Parts, Ranges
from tests.support import (
    Process,
    Response,
    memory_of,
    request,
    start_faulty,
    start_shim,
    wait_until,
    write_config,
)

BIG = 250_000_000  # bytes of the large master (16000 x 15625 grey pixels)
BOMB = 300 * 1024 * 1024  # what the gzip bodies inflate to (about 300 KiB on the wire)
MB = 1024 * 1024
JUNK = 72_000_000  # bytes of a small JPEG with zeros after its end


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The faulty server's files: masters whose header runs past their first 256 KiB."""
    folder = tmp_path_factory.mktemp("bodies-root")
    # a 4000x3000 TIFF with a 600 KB XMP packet (as Photoshop and Lightroom leave them)
    xmp = b"<x:xmpmeta>" + b"x" * 600_000 + b"</x:xmpmeta>"
    Image.new("L", (4000, 3000)).save(folder / "xmp.tif", tiffinfo={700: xmp})
    # a JPEG whose APP13 segments (300 KB of them) run past the first 256 KiB
    small = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 120, 200)).save(small, "JPEG")
    jpeg = small.getvalue()
    apps = b"".join(b"\xff\xed" + struct.pack(">H", 65000) + bytes(64998) for _ in range(5))
    (folder / "apps.jpg").write_bytes(jpeg[:2] + apps + jpeg[2:])
    # a PNG of under 2 MP that is over 4 MiB (little compression)
    noise = Image.frombytes("RGB", (1400, 1400), os.urandom(1400 * 1400 * 3))
    noise.save(folder / "big.png", compress_level=1)
    # a catalogue of more than max_metadata_bytes (1 MiB), served gzip-encoded
    rows = "".join(f"object-{i:06d},p{1 + i % 2}\n" for i in range(80_000))
    (folder / "objects.csv").write_text("obj,img\n" + rows)
    shutil.copy(folder / "apps.jpg", folder / "trickle.jpg")
    # a small JPEG followed by 72 MB of zeros after its end (more than a 64 MiB budget)
    with (folder / "junk.jpg").open("wb") as junk:
        junk.write(jpeg)
        junk.truncate(JUNK)
    return folder


@pytest.fixture(scope="module")
def upstream(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    server = start_faulty(root, tmp_path_factory.mktemp("up"))
    yield server
    server.stop()


@pytest.fixture
def shim(upstream: Process, tmp_path: Path) -> Iterator[Process]:
    """A fresh shim (its peak memory is its own) whose backends all have room for BIG."""
    base = f"http://127.0.0.1:{upstream.port}"
    kinds = ("tailtiff", "tailtiffwhole", "gzipbomb", "gzipimage")
    backends = "".join(
        f'  {kind}: {{type: http, url: "{base}/{kind}/{{id}}", timeout: 60}}\n' for kind in kinds
    )
    routes = "".join(
        f'  - {{match: "^{kind}:(?P<n>[0-9]+)$", backend: {kind}, id: "{{n}}"}}\n' for kind in kinds
    )
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600, memory_budget: 2147483648}\n"
        "cache: {decoded_bytes: 0}\n"
        f"backends:\n{backends}routes:\n{routes}",
    )
    process = start_shim(config, tmp_path)
    # warmed up: the libraries a request loads are loaded before the peak is read
    assert process.get("/iiif/3/tailtiff:100000/info.json").status == 200
    assert process.get("/iiif/3/tailtiff:100000/full/64,/0/default.jpg").status == 200
    yield process
    process.stop()


def _peak(process: Process) -> int:
    return memory_of(process.proc.pid)["VmHWM"]


def _rise(shim: Process, path: str, status: int) -> int:
    """How much one request for ``path`` raised the shim's peak memory, in bytes."""
    before = _peak(shim)
    resp = shim.get(path, timeout=120)
    assert resp.status == status, (resp.status, resp.text[:300])
    return _peak(shim) - before


def _stats(upstream: Process) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = json.loads(request(upstream.port, "/_stats").body)
    return stats


def _asked(upstream: Process, path: str) -> int:
    return int(_stats(upstream)["paths"].get(path, 0))


def _sent(upstream: Process, path: str) -> int:
    return int(_stats(upstream)["sent"].get(path, 0))


def _shim(upstream: Process, tmp: Path, extra: str = "", backend: str = "") -> Process:
    """A shim whose backend ``web`` serves ``/ranged/<id>``, ``plain`` ``/ok/<id>`` and
    ``trickle`` ``/trickle/<id>`` of the faulty server."""
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp / "shim.yaml",
        "server: {health_interval: 3600}\n"
        f"{extra}"
        "backends:\n"
        f'  web: {{type: http, url: "{base}/ranged/{{id}}"{backend}}}\n'
        f'  plain: {{type: http, url: "{base}/ok/{{id}}"}}\n'
        f'  trickle: {{type: http, url: "{base}/trickle/{{id}}"}}\n'
        "routes:\n"
        '  - {match: "^plain:(?P<n>.+)$", backend: plain, id: "{n}"}\n'
        '  - {match: "^trickle:(?P<n>.+)$", backend: trickle, id: "{n}"}\n'
        "  - {backend: web}\n",
    )
    return start_shim(config, tmp)


def test_info_of_a_master_with_its_header_at_the_end_reads_ranges(
    shim: Process, upstream: Process
) -> None:
    """The directory of the TIFF is 250 MB in: it is fetched by a second Range request, not by
    reading the master (which raised the peak by about 734 MB)."""
    before = _asked(upstream, f"/tailtiff/{BIG}")
    rise = _rise(shim, f"/iiif/3/tailtiff:{BIG}/info.json", 200)
    doc = json.loads(shim.get(f"/iiif/3/tailtiff:{BIG}/info.json").body)
    assert (doc["width"], doc["height"]) == (16000, 15625)
    assert rise < BIG // 10, f"info.json raised the peak by {rise / MB:.0f} MB"
    assert _asked(upstream, f"/tailtiff/{BIG}") - before <= 3  # the first bytes, then the tail


def test_info_from_a_server_that_ignores_range_is_not_held_in_memory(shim: Process) -> None:
    """A server that sends the whole master for a Range request: the body is read once, to a
    temporary file, and its header found there."""
    rise = _rise(shim, f"/iiif/3/tailtiffwhole:{BIG}/info.json", 200)
    assert rise < BIG // 10, f"info.json raised the peak by {rise / MB:.0f} MB"


def test_an_image_of_a_large_master_costs_about_its_pixels(shim: Process) -> None:
    """The pixels are needed: the master is decoded (250 MB of grey), its body is held once
    at most (it raised the peak by about 1 GB)."""
    rise = _rise(shim, f"/iiif/3/tailtiff:{BIG}/full/256,/0/default.jpg", 200)
    assert rise < BIG * 1.5, f"the image raised the peak by {rise / MB:.0f} MB"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        # a gzip body of zeros, and of a JPEG's first bytes then zeros: the first bytes of a
        # master are an image's as much as the master is, never inflated
        (f"/iiif/3/gzipbomb:{BOMB}/info.json", "image encoded as 'gzip'"),
        (f"/iiif/3/gzipbomb:{BOMB}/full/64,/0/default.jpg", "image encoded as 'gzip'"),
        (f"/iiif/3/gzipimage:{BOMB}/info.json", "image encoded as 'gzip'"),
        (f"/iiif/3/gzipimage:{BOMB}/full/64,/0/default.jpg", "image encoded as 'gzip'"),
    ],
)
def test_a_compressed_image_body_is_refused_without_inflating_it(
    shim: Process, path: str, words: str
) -> None:
    """We ask for ``identity``: an image body that comes gzip-encoded anyway is a 502, the
    bomb never inflated (it raised the server's peak by about 1.5 GB)."""
    before = _peak(shim)
    resp = shim.get(path, timeout=120)
    rise = _peak(shim) - before
    assert resp.status == 502, (resp.status, resp.text[:300])
    assert words in resp.text, resp.text
    assert rise < 32 * MB, f"the gzip body raised the peak by {rise / MB:.0f} MB"


@pytest.mark.parametrize(
    ("name", "size", "header"),
    [("xmp.tif", (4000, 3000), 700_000), ("apps.jpg", (640, 480), 400_000)],
)
def test_a_header_past_the_first_bytes_is_read_by_a_few_ranges(
    upstream: Process, root: Path, tmp_path: Path, name: str, size: tuple[int, int], header: int
) -> None:
    """A TIFF with a 600 KB XMP packet and a JPEG whose metadata runs past the first 256 KiB:
    the parts are asked for from where the reader stops, a few requests for about the header's
    bytes (before: 10 requests, then the whole master)."""
    shim = _shim(upstream, tmp_path)
    try:
        path = f"/ranged/{name}"
        asked, sent = _asked(upstream, path), _sent(upstream, path)
        resp = shim.get(f"/iiif/3/{name}/info.json")
        assert resp.status == 200, resp.text[:300]
        doc = json.loads(resp.body)
        assert (doc["width"], doc["height"]) == size
        assert _asked(upstream, path) - asked <= 4
        assert _sent(upstream, path) - sent < header + 512 * 1024
        assert _sent(upstream, path) - sent < (root / name).stat().st_size or name != "xmp.tif"
    finally:
        shim.stop()


def test_a_gzip_catalogue_over_http_is_read(upstream: Process, tmp_path: Path) -> None:
    """A store that sends a CSV as it was uploaded, gzip-encoded: inflated (up to the
    source's max_bytes), its objects served (before: "sent an image body encoded as 'gzip'")."""
    base = f"http://127.0.0.1:{upstream.port}"
    images = tmp_path / "images"
    images.mkdir()
    for name in ("p1", "p2"):
        Image.new("RGB", (60, 40)).save(images / f"{name}.jpg")
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600}\n"
        f'backends:\n  local: {{type: files, root: "{images}"}}\n'
        "routes:\n  - {backend: local}\n"
        "presentation:\n  sources:\n"
        f'    cat: {{type: csv, path: "{base}/gzipped/objects.csv", '
        "columns: {object: obj, image: img}}\n",
    )
    shim = start_shim(config, tmp_path)
    try:
        resp = shim.get("/iiif/presentation/3/object-079999/manifest")
        assert resp.status == 200, resp.text[:300]
    finally:
        shim.stop()


@pytest.mark.parametrize("junk", [0, 100 * MB])
def test_bytes_after_a_gzip_body_are_refused(upstream: Process, tmp_path: Path, junk: int) -> None:
    """A small gzip JSON and what follows it: nothing is a good answer; anything after the
    compressed stream is a 502, read no further (before: 100 MiB of junk accepted after 42 s,
    held in memory as it came)."""
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600}\n"
        "backends:\n"
        "  gz: {type: template, timeout: 60,\n"
        f'    info: {{url: "{base}/gzipjunk/{{id}}", width: {{json: ok}}, height: {{json: ok}}}},\n'
        f'    image: {{url: "{base}/ok/{{id}}"}}}}\n'
        "routes:\n  - {backend: gz}\n",
    )
    shim = start_shim(config, tmp_path)
    try:
        resp = shim.get(f"/iiif/3/{junk}/info.json", timeout=60)
        if junk:
            assert resp.status == 502, resp.text[:300]
            assert "after its compressed body" in resp.text
        else:  # the JSON alone is read (true is not a width: a 502 of its own kind)
            assert "after its compressed body" not in resp.text
        assert _asked(upstream, f"/gzipjunk/{junk}") == 1
    finally:
        shim.stop()


def test_an_image_whose_first_chunk_is_two_bytes(upstream: Process, tmp_path: Path) -> None:
    """A server that flushes the first two bytes of a JPEG alone: the head is read until there
    are enough bytes to tell (before: "sent image/jpeg, not an image")."""
    shim = _shim(upstream, tmp_path)
    try:
        resp = shim.get("/iiif/3/trickle:trickle.jpg/full/64,/0/default.jpg")
        assert resp.status == 200, resp.text[:300]
    finally:
        shim.stop()


def test_a_small_original_over_4_mib_is_read_once_and_sent_as_it_is(
    upstream: Process, root: Path, tmp_path: Path
) -> None:
    """A 1400x1400 PNG of 5.9 MB on a web server, asked for as it is: one upstream request,
    the master's very bytes."""
    shim = _shim(upstream, tmp_path)
    try:
        assert shim.get("/iiif/3/plain:big.png/info.json").status == 200
        asked = _asked(upstream, "/ok/big.png")
        resp = shim.get("/iiif/3/plain:big.png/full/max/0/default.png", timeout=60)
        assert resp.status == 200, resp.text[:300]
        assert resp.body == (root / "big.png").read_bytes()
        assert _asked(upstream, "/ok/big.png") - asked == 1
    finally:
        shim.stop()


def _spill_handles(pid: int) -> tuple[int, int]:
    """The process's open files and maps of deleted temporary bodies."""
    fds = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        fds += "iiif-shim-body" in target or target.endswith("(deleted)")
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return fds, sum("(deleted)" in line for line in maps)


def test_the_decoded_cache_keeps_no_spill_file(upstream: Process, tmp_path: Path) -> None:
    """30 uncompressed one-strip TIFFs of 5 MB from a web server, each decoded and kept: none
    of their temporary files stays open or mapped (before: a map and an fd for each, pinning
    their disk, or their RAM on tmpfs)."""
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600}\ncache: {decoded_bytes: 536870912}\n"
        f'backends:\n  tiffs: {{type: http, url: "{base}/tailtiff/{{id}}"}}\n'
        "routes:\n  - {backend: tiffs}\n",
    )
    shim = start_shim(config, tmp_path)
    try:
        for i in range(30):
            resp = shim.get(f"/iiif/3/{5_000_000 + i * 16_000}/full/64,/0/default.jpg")
            assert resp.status == 200, resp.text[:300]
        wait_until(lambda: _spill_handles(shim.proc.pid) == (0, 0), "spill files closed", 10)
    finally:
        shim.stop()


def test_a_spill_folder_without_room_is_a_503(upstream: Process, tmp_path: Path) -> None:
    """Image answers over 4 MiB are written to the spill folder: when it has no room (here,
    a file size limit on the process: EFBIG, as a full disk gives ENOSPC) the request is a 503
    with Retry-After, not a 500 with a traceback; the same image below that size is served."""
    spills = tmp_path / "spills"
    spills.mkdir()
    shim = _shim(upstream, tmp_path, backend=f', spill_dir: "{spills}"')
    try:
        assert shim.get("/iiif/3/plain:big.png/info.json").status == 200
        limit = (2 * MB, 2 * MB)
        resource.prlimit(shim.proc.pid, resource.RLIMIT_FSIZE, limit)
        resp = shim.get("/iiif/3/plain:big.png/full/64,/0/default.jpg")
        assert resp.status == 503, resp.text[:300]
        assert resp.header("Retry-After")
        assert "no room for the temporary file" in resp.text
        assert str(spills) not in resp.text
        assert "Traceback" not in shim.log.read_text()
        resp = shim.get("/iiif/3/apps.jpg/full/64,/0/default.jpg")
        assert resp.status == 200, resp.text[:300]
    finally:
        shim.stop()


def test_parts_are_merged_and_a_read_across_them_is_served() -> None:
    """Parts that touch or overlap are one; a read spanning two fetched parts succeeds; a read
    that reaches bytes not fetched names the first absent span only."""
    data = bytes(range(256)) * 40  # 10 240 bytes
    parts = Parts(len(data))
    parts.add(0, data[:100])
    parts.add(200, data[200:300])
    reader = Ranges(parts)
    reader.seek(90)
    with pytest.raises(Missing) as missed:
        reader.read(20)  # 90-109: known to 99, then a gap to 199
    assert (missed.value.start, missed.value.size) == (100, 10)
    reader.seek(50)
    with pytest.raises(Missing) as missed:
        reader.read(400)  # the first gap, up to the next part
    assert (missed.value.start, missed.value.size) == (100, 100)
    parts.add(100, data[100:200])  # fills the gap: one part from 0 to 300
    reader.seek(90)
    assert reader.read(20) == data[90:110]
    assert reader.read(190) == data[110:300]
    parts.add(250, data[250:400])  # overlaps the end
    reader.seek(10)
    assert reader.read(390) == data[10:400]
    assert parts.fetched == 400
    reader.seek(0, io.SEEK_END)
    assert reader.read(10) == b""  # past the end: nothing
    unknown = Ranges(Parts(None))
    with pytest.raises(Missing) as missed:
        unknown.seek(0, io.SEEK_END)
    assert missed.value.start is None  # only the whole file tells where it ends


def test_what_a_body_may_hold_is_reserved_from_the_budget(
    upstream: Process, root: Path, tmp_path: Path
) -> None:
    """While a small master is fetched from a web server (slowly here), the request holds, on
    top of its pixels' cost, what its answer is expected to hold in memory (its pieces, then
    joined: twice what 640x480 pixels may take written), as /health shows; not a flat 8 MiB
    whatever the answer (as before), nor only the pixels (as before that)."""
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600}\n"
        f'backends:\n  slow: {{type: http, url: "{base}/delay/2/{{id}}"}}\n'
        "routes:\n  - {backend: slow}\n",
    )
    shim = start_shim(config, tmp_path)
    try:
        assert shim.get("/iiif/3/apps.jpg/info.json").status == 200
        answers: list[Response] = []
        asking = threading.Thread(
            target=lambda: answers.append(shim.get("/iiif/3/apps.jpg/full/64,/0/default.jpg"))
        )
        asking.start()

        def reserved() -> int:
            return int(json.loads(shim.get("/health").body)["memory"]["reserved"])

        seen: list[int] = []
        try:
            wait_until(lambda: seen.append(reserved()) or seen[-1] > 0, "a reservation", 10)
        finally:
            asking.join(30)
        assert answers and answers[0].status == 200
        size = (root / "apps.jpg").stat().st_size
        assert 2 * size <= seen[-1] < 8 * MB, (size, seen[-1])
        assert reserved() == 0
    finally:
        shim.stop()


def _tmpfs() -> Path:
    """A folder in memory (a tmpfs) for spill files: /dev/shm."""
    if not Path("/dev/shm").is_dir() or os.statvfs("/dev/shm").f_bavail == 0:
        pytest.fail("this test needs /dev/shm (a tmpfs with room)")
    return Path("/dev/shm")


def test_a_spill_folder_in_memory_leaves_small_images_within_a_small_budget(
    upstream: Process, tmp_path: Path
) -> None:
    """Spill files on tmpfs (/tmp on Debian 13, Fedora, Arch) with a budget of 64 MiB: a small
    image of a web server's small master reserves what its answer holds, and is served (before:
    every image request of a network backend reserved max_bytes and 1 MiB more, 257 MiB,
    and got 501)."""
    base = f"http://127.0.0.1:{upstream.port}"
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600, memory_budget: 67108864}\n"
        f'backends:\n  web: {{type: http, url: "{base}/ok/{{id}}", spill_dir: "{_tmpfs()}"}}\n'
        "routes:\n  - {backend: web}\n",
    )
    shim = start_shim(config, tmp_path)
    try:
        assert shim.get("/iiif/3/apps.jpg/info.json").status == 200
        for path in ("full/64,/0/default.jpg", "0,0,256,256/256,/0/default.jpg"):
            resp = shim.get(f"/iiif/3/apps.jpg/{path}")
            assert resp.status == 200, (path, resp.status, resp.text[:300])
    finally:
        shim.stop()


@pytest.mark.parametrize("in_memory", [True, False])
def test_what_is_spilled_to_a_folder_in_memory_counts_against_the_budget(
    upstream: Process, tmp_path: Path, in_memory: bool
) -> None:
    """A 640x480 JPEG with 72 MB after its end, asked for as a thumbnail with a budget of
    64 MiB: written to a folder in memory, its bytes are memory, more than the budget (501,
    from its declared length, before any of it is read); written to disk, only the block in
    memory counts, and it is served."""
    base = f"http://127.0.0.1:{upstream.port}"
    spills = _tmpfs() if in_memory else tmp_path
    config = write_config(
        tmp_path / "shim.yaml",
        "server: {health_interval: 3600, memory_budget: 67108864}\n"
        f'backends:\n  web: {{type: http, url: "{base}/ok/{{id}}", spill_dir: "{spills}"}}\n'
        "routes:\n  - {backend: web}\n",
    )
    shim = start_shim(config, tmp_path)
    try:
        assert shim.get("/iiif/3/junk.jpg/info.json").status == 200
        resp = shim.get("/iiif/3/junk.jpg/full/64,/0/default.jpg", timeout=60)
        if in_memory:
            assert resp.status == 501, resp.text[:300]
            assert "memory budget" in resp.text
        else:
            assert resp.status == 200, resp.text[:300]
        assert json.loads(shim.get("/health").body)["memory"]["reserved"] == 0
    finally:
        shim.stop()


def test_check_config_warns_of_a_spill_folder_in_memory(tmp_path: Path) -> None:
    """A spill folder on tmpfs (here /dev/shm) holds large answers in RAM: check-config says
    so (and passes); a spill folder that is not there fails it."""
    if not Path("/dev/shm").is_dir():
        pytest.fail("this test needs /dev/shm (a tmpfs)")
    config = write_config(
        tmp_path / "shim.yaml",
        'backends:\n  web: {type: http, url: "http://127.0.0.1:9/{id}", spill_dir: /dev/shm}\n'
        "routes:\n  - {backend: web}\n",
    )
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "backends.web.spill_dir" in checked.stdout + checked.stderr
    assert "in memory (tmpfs)" in checked.stdout + checked.stderr
    config.write_text(config.read_text().replace("/dev/shm", str(tmp_path / "nowhere")))
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "is not a writable folder" in checked.stdout + checked.stderr
