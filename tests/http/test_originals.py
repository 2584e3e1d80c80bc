"""Originals as they are (``core/passthrough.py``): the whole master at its own size in its own
format is the master's own bytes, from a ``files`` folder (its file sent as it is, on either
event loop) and through an ``http`` backend (nginx serving the same masters: held whole when
small, streamed when large, its header read further when large metadata comes first); a master
whose bytes are not what the pipeline delivers (CMYK, 16-bit, an EXIF orientation, several
pages, larger than the limits or ``max_source_pixels``) goes the usual way, under the tag a
re-encoded answer has. A master newer than its cached facts, a file cut short or written during
a download, a slow client and a client that leaves are each shown over real sockets, on both
event loops; ``iiif.originals: false`` re-encodes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import random
import re
import shutil
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from tests.support import (
    Process,
    Response,
    free_port,
    log_lines,
    need_tool,
    nginx_config,
    start_faulty,
    start_shim,
    wait_until,
    write_config,
)

W, H = 600, 400
LIMIT = 4000  # iiif.max_width of the shims: "wide" is larger
MAX_SOURCE = 15_000_000  # iiif.max_source_pixels of the shims: "over" is larger
BIG = (3000, 3000)  # about 10 MB of JPEG: several send slices, more than socket buffers hold


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    bands = len(mode)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))


def _quadrants(size: tuple[int, int]) -> Image.Image:
    """Red, green / blue, white: the colour at each corner tells how the image was turned."""
    w, h = size
    im = Image.new("RGB", size, (255, 0, 0))
    im.paste((0, 255, 0), (w // 2, 0, w, h // 2))
    im.paste((0, 0, 255), (0, h // 2, w // 2, h))
    im.paste((255, 255, 255), (w // 2, h // 2, w, h))
    return im


def _png16_rgb(size: tuple[int, int]) -> bytes:
    """A 16-bit RGB PNG (Pillow writes none: it reads one as 8-bit RGB)."""
    w, h = size
    row = b"\x00" + b"\xc8\x00\x32\x00\x0a\x00" * w  # (200, 50, 10) in 16 bits
    raw = row * h

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return (
        signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("originals")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _noise("RGB", (W, H), 1).save(folder / "photo.jpg", quality=92, icc_profile=srgb)
    _noise("L", (W, H), 2).save(folder / "gray.jpg", quality=90)
    _noise("RGBA", (W, H), 3).save(folder / "alpha.png", compress_level=1)  # not as re-encoded
    _noise("RGB", (W, H), 4).save(folder / "scan.tif", compression="tiff_lzw")  # IFD last
    _noise("RGB", (W, H), 8).save(folder / "plain.tif")  # its directory first
    _noise("RGB", (W, H), 5).save(folder / "web.webp", quality=80)
    _noise("RGB", (LIMIT + 200, 300), 6).save(folder / "wide.jpg", quality=90)
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("I;16", (W, H), 40000).save(folder / "deep.png")
    (folder / "deep-rgb.png").write_bytes(_png16_rgb((W, H)))
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    _quadrants((W, H)).save(folder / "turned.jpg", quality=95, exif=exif.tobytes())
    first, second = _quadrants((W, H)), _noise("RGB", (W // 2, H // 2), 7)
    first.save(folder / "pages.tif", save_all=True, append_images=[second])
    _noise("RGB", BIG, 9).save(folder / "big.jpg", quality=95)
    Image.new("RGB", (LIMIT, MAX_SOURCE // LIMIT + 1)).save(folder / "over.jpg")
    (folder / "bigmeta.jpg").write_bytes(_with_segments(_noise("RGB", (1500, 1500), 10), 3))
    return folder


def _with_segments(im: Image.Image, count: int) -> bytes:
    """A JPEG with ``count`` APP segments of 60 KB each before its frame header (as large
    EXIF, XMP or ICC data come), so its header lies past the first 64 KiB."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    payload = b"XMP\x00" + bytes(60_000)
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload  # APP13
    return data[:2] + segment * count + data[2:]


def _config(
    tmp: Path,
    masters: Path,
    ports: tuple[int, int],
    loop: str,
    server: str = "",
    iiif: str = "",
) -> Path:
    """The shims' configuration (``ports``: nginx's and the faulty upstream's); ``server``
    and ``iiif``: more keys of those sections."""
    web_port, faulty_port = ports
    return write_config(
        tmp / f"shim-{loop}.yaml",
        f"""
        server: {{event_loop: {loop}{server}}}
        iiif: {{max_width: {LIMIT}, max_height: {LIMIT}, max_source_pixels: {MAX_SOURCE}{iiif}}}
        cache: {{disk: "{tmp / f"disk-{loop}"}"}}
        backends:
          local: {{type: files, root: "{masters}"}}
          web: {{type: http, url: "http://127.0.0.1:{web_port}/{{id}}"}}
          cut: {{type: http, url: "http://127.0.0.1:{faulty_port}/truncated/{{id}}"}}
        routes:
          - {{match: "^web:(?P<rest>.+)$", backend: web, id: "{{rest}}"}}
          - {{match: "^cut:(?P<rest>.+)$", backend: cut, id: "{{rest}}"}}
          - {{backend: local}}
        """,
    )


@pytest.fixture(scope="module")
def nginx(masters: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("originals-nginx")
    port = free_port()
    conf = nginx_config(masters, port, tmp, extra="        types { image/webp webp; }\n")
    web = Process(
        [need_tool("nginx", "/usr/sbin/nginx"), "-c", str(conf), "-p", str(tmp)],
        port,
        tmp / "nginx.log",
    )
    yield port
    web.stop()


@pytest.fixture(scope="module")
def upstreams(
    masters: Path, nginx: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """nginx serving the masters, and the faulty upstream cutting them short."""
    faulty = start_faulty(masters, tmp_path_factory.mktemp("originals-faulty"))
    yield nginx, faulty.port
    faulty.stop()


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def shim(
    request: pytest.FixtureRequest,
    masters: Path,
    upstreams: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Process]:
    """The shim on each event loop: asyncio's sends a file by sendfile(2), uvloop's reads it."""
    loop = request.param
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.fail("uvloop is not installed: run `bash deploy/test.sh`, which installs it")
    tmp = tmp_path_factory.mktemp(f"originals-{loop}")
    proc = start_shim(_config(tmp, masters, upstreams, loop), tmp)
    proc.disk = tmp / f"disk-{loop}"  # type: ignore[attr-defined]
    proc.loop = loop  # type: ignore[attr-defined]
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def reencoding(
    masters: Path, upstreams: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """A shim configured as the others but with ``iiif.originals: false``."""
    tmp = tmp_path_factory.mktemp("originals-off")
    config = _config(tmp, masters, upstreams, "asyncio", iiif=", originals: false")
    proc = start_shim(config, tmp)
    yield proc
    proc.stop()


ORIGINALS = [
    ("photo.jpg", "3/photo.jpg/full/max/0/default.jpg", "image/jpeg"),
    ("photo.jpg", "2/photo.jpg/full/full/0/default.jpg", "image/jpeg"),
    ("photo.jpg", "2/photo.jpg/full/max/0/default.jpg", "image/jpeg"),
    ("photo.jpg", f"3/photo.jpg/full/{W},{H}/0/default.jpg", "image/jpeg"),
    ("gray.jpg", "3/gray.jpg/full/max/0/default.jpg", "image/jpeg"),
    ("alpha.png", "3/alpha.png/full/max/0/default.png", "image/png"),
    ("scan.tif", "3/scan.tif/full/max/0/default.tif", "image/tiff"),
    ("plain.tif", "3/plain.tif/full/max/0/default.tif", "image/tiff"),
    ("web.webp", "3/web.webp/full/max/0/default.webp", "image/webp"),
]


# (through a web server these small masters are fetched whole: a TIFF's directory at its end,
# or a WebP, which Pillow reads whole to open, is read as well as from a file)
CASES = [(backend, *case) for backend in ("files", "http") for case in ORIGINALS]


@pytest.mark.parametrize(("backend", "name", "path", "media_type"), CASES)
def test_the_whole_master_in_its_own_format_is_the_masters_own_bytes(
    shim: Process, masters: Path, backend: str, name: str, path: str, media_type: str
) -> None:
    if backend == "http":
        version, ident, rest = path.split("/", 2)
        path = f"{version}/web:{ident}/{rest}"
    resp = shim.get(f"/iiif/{path}")
    assert resp.status == 200, resp.text
    assert resp.body == (masters / name).read_bytes()  # the very bytes, never re-encoded
    assert resp.header("Content-Type") == media_type
    assert resp.header("Content-Length") == str(len(resp.body))
    assert resp.header("Access-Control-Allow-Origin") == "*"
    link = resp.header("Link") or ""
    assert 'rel="canonical"' in link and 'rel="profile"' in link
    assert resp.header("ETag") and resp.header("Last-Modified")


def _usual(resp: Response, master: bytes, size: tuple[int, int]) -> Image.Image:
    """The answer, checked to be a decoded and encoded image (not the master's bytes)."""
    assert resp.status == 200, resp.text
    assert resp.body != master
    im = resp.image()
    assert im.size == size
    return im


@pytest.mark.parametrize("prefix", ["", "web:"])
def test_a_master_whose_bytes_are_not_the_answer_goes_the_usual_way(
    shim: Process, masters: Path, prefix: str
) -> None:
    def get(name: str, fmt: str, size: str = "max") -> tuple[Response, bytes]:
        resp = shim.get(f"/iiif/3/{prefix}{name}/full/{size}/0/default.{fmt}")
        return resp, (masters / name).read_bytes()

    # CMYK: converted to RGB (cyan-less magenta+yellow is red)
    im = _usual(*get("cmyk.jpg", "jpg"), (W, H))
    assert im.mode == "RGB"
    r, g, b = im.getpixel((W // 2, H // 2))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60
    # 16 bits a sample: 8-bit output, same values scaled
    im = _usual(*get("deep.png", "png"), (W, H))
    assert im.mode == "L" and im.getpixel((5, 5)) == 40000 // 256
    im = _usual(*get("deep-rgb.png", "png"), (W, H))
    assert im.mode == "RGB" and im.getpixel((5, 5)) == (200, 50, 10)
    # an EXIF orientation: pixels as stored (as every tile of it), no tag left to turn them
    im = _usual(*get("turned.jpg", "jpg"), (W, H))
    assert 0x0112 not in im.getexif()
    for (x, y), colour in {(5, 5): (255, 0, 0), (W - 5, 5): (0, 255, 0)}.items():
        assert all(abs(a - b) < 16 for a, b in zip(im.getpixel((x, y)), colour, strict=True))  # type: ignore[arg-type]
    # several pages: the first one, alone
    with Image.open(io.BytesIO(get("pages.tif", "tif")[0].body)) as im:
        assert im.size == (W, H) and getattr(im, "n_frames", 1) == 1
    # larger than the limits: max is the limit
    _usual(*get("wide.jpg", "jpg"), (LIMIT, 300 * LIMIT // (LIMIT + 200)))
    # the same master asked in another format, or at another size
    _usual(*get("photo.jpg", "png"), (W, H))
    _usual(*get("photo.jpg", "jpg", f"{W - 1},"), (W - 1, round(H * (W - 1) / W)))


def test_an_original_has_validators_of_its_own_and_ranges(shim: Process, masters: Path) -> None:
    path = "/iiif/3/photo.jpg/full/max/0/default.jpg"
    master = (masters / "photo.jpg").read_bytes()
    first = shim.get(path)
    etag = first.header("ETag")
    assert etag and first.body == master
    assert first.header("Accept-Ranges") == "bytes"
    again = shim.get(path, headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b"" and again.header("ETag") == etag
    since = first.header("Last-Modified") or ""
    assert shim.get(path, headers={"If-Modified-Since": since}).status == 304
    assert first.header("X-Content-Type-Options") == "nosniff"
    exposed = first.header("Access-Control-Expose-Headers") or ""
    assert "Content-Range" in exposed and "Accept-Ranges" in exposed
    head = shim.get(path, method="HEAD")
    assert head.status == 200 and head.body == b"" and head.header("ETag") == etag
    assert head.header("Content-Length") == str(len(master))
    # one byte range; a suffix; past the end; an If-Range that no longer matches
    part = shim.get(path, headers={"Range": "bytes=100-1123"})
    assert part.status == 206 and part.body == master[100:1124]
    assert part.header("Content-Range") == f"bytes 100-1123/{len(master)}"
    tail = shim.get(path, headers={"Range": "bytes=-500"})
    assert tail.status == 206 and tail.body == master[-500:]
    unit = shim.get(path, headers={"Range": "Bytes=0-9"})  # the unit is case-insensitive
    assert unit.status == 206 and unit.body == master[:10]
    past = shim.get(path, headers={"Range": f"bytes={len(master)}-"})
    assert past.status == 416 and past.header("Content-Range") == f"bytes */{len(master)}"
    stale = shim.get(path, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status == 200 and stale.body == master
    several = shim.get(path, headers={"Range": "bytes=0-9,20-29"})
    assert several.status == 200 and several.body == master


def _kept(disk: Path) -> set[str]:
    """The images the disk tier holds (each source's facts apart)."""
    found = disk.rglob("*") if disk.exists() else ()
    return {str(p) for p in found if p.is_file() and p.name != "facts"}


def test_originals_are_not_kept_in_the_derivative_caches(shim: Process, masters: Path) -> None:
    disk: Path = shim.disk  # type: ignore[attr-defined]
    # a derivative is kept in the disk tier (so what follows can see one being written)
    before = _kept(disk)
    assert shim.get(f"/iiif/3/photo.jpg/full/{W // 2},/0/default.jpg").status == 200
    wait_until(lambda: len(_kept(disk)) > len(before), "a derivative written to the disk tier")
    before = _kept(disk)
    fresh = f"fresh-{shim.port}"  # masters no other test asked for: nothing of them kept yet
    for name in ("photo.jpg", "alpha.png", "scan.tif"):
        ext = name.rsplit(".", 1)[1]
        shutil.copy(masters / name, masters / f"{fresh}.{ext}")
        for prefix in ("", "web:"):
            path = f"/iiif/3/{prefix}{fresh}.{ext}/full/max/0/default.{ext}"
            resp = shim.get(path)
            assert resp.body == (masters / name).read_bytes(), path
    # and another derivative after them: once it is there, anything written before is too
    assert shim.get(f"/iiif/3/photo.jpg/full/{W // 3},/0/default.jpg").status == 200
    wait_until(lambda: len(_kept(disk)) > len(before), "a second derivative written")
    added = _kept(disk) - before
    assert len(added) == 1, added  # that derivative alone: no copy of any original


def test_an_original_has_a_tag_of_its_own_and_only_the_masters_bytes_have_it(
    shim: Process, reencoding: Process, masters: Path
) -> None:
    path = "/iiif/3/photo.jpg/full/max/0/default.jpg"
    on, off = shim.get(path), reencoding.get(path)
    assert on.body == (masters / "photo.jpg").read_bytes()
    # iiif.originals: false re-encodes, without what the file carries
    assert off.status == 200 and off.body != on.body and off.image().size == (W, H)
    assert "icc_profile" not in off.image().info
    # the original's tag is not the tag a re-encoded answer to the same URL has
    assert on.header("ETag") and on.header("ETag") != off.header("ETag")
    # a master whose facts allow an original but whose bytes are not one (an EXIF
    # orientation) goes the usual way, under the tag of a re-encoded answer
    turned = "/iiif/3/turned.jpg/full/max/0/default.jpg"
    usual = shim.get(turned)
    assert usual.body != (masters / "turned.jpg").read_bytes()
    assert usual.header("ETag") == reencoding.get(turned).header("ETag")
    assert usual.header("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("prefix", ["", "web:"])
def test_large_masters_are_sent_whole(shim: Process, masters: Path, prefix: str) -> None:
    # big.jpg: several send slices from a file, streamed from a web server (over 2 MP);
    # bigmeta.jpg: 180 KB of metadata before its frame header, past the first bytes read
    for name in ("big.jpg", "bigmeta.jpg"):
        resp = shim.get(f"/iiif/3/{prefix}{name}/full/max/0/default.jpg")
        assert resp.status == 200, resp.text
        assert resp.body == (masters / name).read_bytes(), name


def test_a_large_master_from_a_web_server_is_streamed(shim: Process, masters: Path) -> None:
    """Streamed, not held: the status goes out before the upstream's body has come, so a body
    the upstream cuts short is a cut response (held whole, it would be a clean 502)."""
    path = "/iiif/3/cut:big.jpg/full/max/0/default.jpg"
    with _paused(shim.port, path) as download:
        assert download.status == 200
        assert download.length == (masters / "big.jpg").stat().st_size
        assert download.drained() < download.length


def test_a_master_over_max_source_pixels_is_not_sent_whole(shim: Process) -> None:
    resp = shim.get("/iiif/3/over.jpg/full/max/0/default.jpg")
    assert resp.status == 501 and "source pixels" in resp.text


@pytest.mark.parametrize(
    ("prefix", "size"), [("", (W, H)), ("web:", (W, H)), ("web:", (1500, 1500))]
)
def test_a_master_newer_than_its_facts_is_never_sent_under_their_tag(
    shim: Process, masters: Path, prefix: str, size: tuple[int, int]
) -> None:
    name = f"newer-{shim.port}-{prefix[:-1] or 'files'}-{size[0]}.jpg"
    _noise("RGB", size, 11).save(masters / name, quality=90)
    path = f"/iiif/3/{prefix}{name}/full/max/0/default.jpg"
    first = shim.get(path)  # its facts are cached now
    assert first.body == (masters / name).read_bytes()
    _noise("RGB", size, 12).save(masters / name, quality=80)  # same size, other bytes
    stamp = (masters / name).stat().st_mtime + 5
    os.utime(masters / name, (stamp, stamp))  # a second later, at least, for any server
    again = shim.get(path)
    assert again.status == 200
    assert again.body == (masters / name).read_bytes()  # the new master, as it is
    assert again.header("ETag") != first.header("ETag")
    assert again.header("Last-Modified") != first.header("Last-Modified")


@dataclass
class _Download:
    """A download whose client has read the status and headers, and nothing since."""

    sock: socket.socket
    status: int
    length: int  # Content-Length (-1: none)
    received: int  # body bytes read with the headers

    def drained(self) -> int:
        """The body bytes the client gets in all, read until the server closes or cuts."""
        total = self.received
        try:
            while got := self.sock.recv(1 << 16):
                total += len(got)
        except ConnectionResetError:
            pass
        return total


@contextlib.contextmanager
def _paused(port: int, path: str) -> Iterator[_Download]:
    """A GET whose client reads the status and headers, then reads nothing until the block
    calls :meth:`_Download.drained` (a small receive buffer: the server has to wait)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(20)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: shim\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(1024)
            assert got, data
            data += got
        head, _, rest = data.partition(b"\r\n\r\n")
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        yield _Download(sock, int(head.split()[1]), int(found[1]) if found else -1, len(rest))
    finally:
        sock.close()


def _copy(masters: Path, name: str, as_name: str) -> Path:
    shutil.copy(masters / name, masters / as_name)
    return masters / as_name


def test_a_file_cut_short_during_a_download_cuts_it_and_the_server_goes_on(
    shim: Process, masters: Path
) -> None:
    copy = _copy(masters, "big.jpg", f"short-{shim.port}.jpg")
    with _paused(shim.port, f"/iiif/3/{copy.name}/full/max/0/default.jpg") as download:
        assert download.status == 200 and download.length == copy.stat().st_size
        os.truncate(copy, 1000)  # cp over a file truncates it first
        assert download.drained() < download.length  # a cut, never a complete-looking body
    # and the process still answers (on asyncio's loop, sendfile met the end of the file and
    # returned 0 for ever: the process spun without answering anything)
    assert shim.get("/health", timeout=5).status == 200


def test_a_file_written_during_a_download_cuts_it(shim: Process, masters: Path) -> None:
    copy = _copy(masters, "big.jpg", f"inplace-{shim.port}.jpg")
    size = copy.stat().st_size
    with _paused(shim.port, f"/iiif/3/{copy.name}/full/max/0/default.jpg") as download:
        assert download.status == 200 and download.length == size
        with copy.open("r+b") as rewritten:  # written in place, at the same size
            rewritten.write(bytes(size))
        assert download.drained() < size  # neither version: never sent as a complete body
    assert shim.get("/health", timeout=5).status == 200


def test_a_slow_download_outlives_the_request_deadline(
    shim: Process, masters: Path, upstreams: tuple[int, int], tmp_path: Path
) -> None:
    loop: str = shim.loop  # type: ignore[attr-defined]
    config = _config(tmp_path, masters, upstreams, loop, server=", request_timeout: 1")
    slow = start_shim(config, tmp_path)
    try:
        path = "/iiif/3/big.jpg/full/max/0/default.jpg"
        master = (masters / "big.jpg").read_bytes()
        with _paused(slow.port, path) as download:
            assert download.status == 200 and download.length == len(master)
            # a client slower than the deadline: there is nothing to wait on but the clock
            time.sleep(2.5)
            assert download.drained() == len(master)  # the whole body, not cut at the deadline
        line = log_lines(slow.log, f'"GET {path} HTTP/1.1"')[0]
        assert f'" 200 {len(master)} ' in line, line  # its real status and body bytes
    finally:
        slow.stop()


def test_clients_that_leave_before_the_headers_are_not_errors(shim: Process, masters: Path) -> None:
    copy = _copy(masters, "big.jpg", f"gone-{shim.port}.jpg")
    path = f"/iiif/3/{copy.name}/full/max/0/default.jpg"
    request = f"GET {path} HTTP/1.1\r\nHost: shim\r\n\r\n".encode()
    count = 40
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", shim.port), timeout=5) as sock:
            sock.sendall(request)  # and closed at once
    log_lines(shim.log, f'"GET {path} HTTP/1.1"', count)
    text = shim.log.read_text()
    assert "unexpected error" not in text and "Traceback" not in text
    metrics = shim.get("/metrics").text
    assert 'endpoint="image",status="500"' not in metrics
