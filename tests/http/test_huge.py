"""Huge masters (20000x15000) through the shim over real sockets, within a memory budget.

The masters are written once per session by the vips CLI from a 40x30 grid of 500-pixel
blocks, each its own colour: a pyramidal JPEG-compressed tiled TIFF (levels as pages, and as
SubIFDs), a JPEG 2000 and a plain JPEG. Every answer is checked by size and by the colour of the
blocks it shows. The TIFFs are read by window at a pyramid level; the JPEG and the JPEG 2000 are
decoded whole (at a reduced size), so what needs more than the whole budget is refused at once.
The shim's peak resident memory (VmHWM) is read while 16 clients sweep tiles.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import Process, memory_of, need_tool, request, start_shim, write_config

WIDTH, HEIGHT, BLOCK = 20000, 15000, 500
MB = 1024 * 1024
BUDGET = 256 * MB
DECODED = 64 * MB
TOLERANCE = 24  # per channel: two JPEG encodings of flat colour
MASTERS = ("huge-tif", "huge-subifd", "huge-jp2", "huge-jpg")


def colour(x: int, y: int) -> tuple[int, int, int]:
    """The colour of the master at full-size pixel (x, y)."""
    i, j = x // BLOCK, y // BLOCK
    return (
        (i * 97 + j * 31) % 200 + 30,
        (i * 41 + j * 113) % 200 + 30,
        (i * 7 + j * 59) % 200 + 30,
    )


def make_masters(folder: Path, vips: str) -> Path:
    """The four 20000x15000 masters in ``folder`` (kept when already there)."""
    grid = Image.new("RGB", (WIDTH // BLOCK, HEIGHT // BLOCK))
    grid.putdata(
        [colour(i * BLOCK, j * BLOCK) for j in range(grid.height) for i in range(grid.width)]
    )
    small = folder / "grid.png"
    grid.save(small)
    tiles = "tile,pyramid,compression=jpeg,Q=90,tile-width=256,tile-height=256"
    outputs = {
        "huge-tif.tif": tiles,
        "huge-subifd.tif": tiles + ",subifd",
        "huge-jpg.jpg": "Q=90",
        "huge-jp2.jp2": "Q=40",
    }
    for name, options in outputs.items():
        if (folder / name).exists():
            continue
        partial = folder / f"partial-{name}"
        # nearest-neighbour enlargement keeps every block one flat colour
        subprocess.run(
            [vips, "resize", small, f"{partial}[{options}]", str(BLOCK), "--kernel", "nearest"],
            check=True,
        )
        partial.rename(folder / name)
    small.unlink()
    return folder


@pytest.fixture(scope="session")
def huge_masters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_masters(tmp_path_factory.mktemp("huge"), need_tool("vips"))


def shim_config(
    tmp: Path, root: Path, budget: int = BUDGET, decoded: int = DECODED, workers: int = 4
) -> Path:
    """Rendered images not cached (every request decodes), a small decoded-source cache."""
    return write_config(
        tmp / "shim.yaml",
        f"""\
server:
  workers: {workers}
  memory_budget: {budget}
  memory_wait: 120
  request_timeout: 120
cache:
  image_bytes: 0
  decoded_bytes: {decoded}
backends:
  masters: {{type: files, root: "{root}"}}
routes:
  - {{backend: masters}}
""",
    )


@pytest.fixture(scope="module")
def shim(huge_masters: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("huge-shim")
    proc = start_shim(shim_config(tmp, huge_masters), tmp)
    yield proc
    proc.stop()


# --- checking an answer -----------------------------------------------------------------------


def _image(shim: Process, path: str) -> Image.Image:
    answer = request(shim.port, path, timeout=120)
    assert answer.status == 200, (path, answer.status, answer.body[:300])
    im = Image.open(io.BytesIO(answer.body))
    im.load()
    return im.convert("RGB")


def _check_colours(im: Image.Image, region: tuple[int, int, int, int], what: str) -> int:
    """Compare the answer with the master's blocks at points well inside a block (block centres
    and a grid); the number of points compared."""
    rx, ry, rw, rh = region
    sx, sy = rw / im.width, rh / im.height
    if BLOCK / max(sx, sy) < 8:  # blocks of a few pixels: JPEG blurs them into each other
        return 0
    margin = max(24.0, 2.5 * max(sx, sy))  # scaling and JPEG blur colours near block edges
    points = {
        (int((gx + 0.5) * im.width / 24), int((gy + 0.5) * im.height / 24))
        for gx in range(24)
        for gy in range(24)
    }
    for cx in range(BLOCK // 2, WIDTH, BLOCK):  # block centres inside the region
        for cy in range(BLOCK // 2, HEIGHT, BLOCK):
            if rx <= cx < rx + rw and ry <= cy < ry + rh:
                points.add(
                    (
                        min(int((cx - rx) / sx), im.width - 1),
                        min(int((cy - ry) / sy), im.height - 1),
                    )
                )
    checked = 0
    for px, py in sorted(points):
        x, y = rx + (px + 0.5) * sx, ry + (py + 0.5) * sy
        if min(x % BLOCK, BLOCK - x % BLOCK, y % BLOCK, BLOCK - y % BLOCK) < margin:
            continue
        got = im.getpixel((px, py))
        want = colour(int(x), int(y))
        assert isinstance(got, tuple)
        assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, want, strict=True)), (
            f"{what}: pixel {(px, py)} (master {int(x)},{int(y)}) is {got}, the block is {want}"
        )
        checked += 1
    return checked


def _tile(shim: Process, name: str, sf: int, col: int, row: int, tile: int = 256) -> None:
    span = tile * sf
    x, y = col * span, row * span
    w, h = min(span, WIDTH - x), min(span, HEIGHT - y)
    size = (math.ceil(w / sf), math.ceil(h / sf))
    im = _image(shim, f"/iiif/3/{name}/{x},{y},{w},{h}/{size[0]},{size[1]}/0/default.jpg")
    assert im.size == size
    checked = _check_colours(im, (x, y, w, h), f"{name} tile {sf}:{col},{row}")
    assert checked > 0 or sf >= 64  # from 1/64 a block is under 8 pixels


def _tiles_of_level(sf: int, tile: int = 256) -> list[tuple[int, int]]:
    """First, last (clipped at both edges), middle and a few more tiles of a level."""
    cols = math.ceil(WIDTH / (tile * sf))
    rows = math.ceil(HEIGHT / (tile * sf))
    picks = {(0, 0), (cols - 1, rows - 1), (cols - 1, 0), (0, rows - 1), (cols // 2, rows // 2)}
    picks |= {(cols // 3, rows // 4), (2 * cols // 3, 3 * rows // 4)}
    return sorted(picks)


# --- the tests --------------------------------------------------------------------------------


def test_info_offers_the_pyramids_tiles(shim: Process) -> None:
    for name in ("huge-tif", "huge-subifd"):
        answer = request(shim.port, f"/iiif/3/{name}/info.json")
        assert answer.status == 200
        doc = json.loads(answer.body)
        assert (doc["width"], doc["height"]) == (WIDTH, HEIGHT)
        (tiles,) = doc["tiles"]
        assert (tiles["width"], tiles.get("height", tiles["width"])) == (256, 256)
        assert tiles["scaleFactors"] == [1, 2, 4, 8, 16, 32, 64, 128]


@pytest.mark.parametrize("name", ["huge-tif", "huge-subifd"])
def test_tiff_tiles_at_every_level(shim: Process, name: str) -> None:
    for sf in (1, 2, 4, 8, 16, 32, 64, 128):
        for col, row in _tiles_of_level(sf):
            _tile(shim, name, sf, col, row)


@pytest.mark.parametrize("name", MASTERS)
def test_full_image_at_small_sizes(shim: Process, name: str) -> None:
    for size, want in (("512,", (512, 384)), ("!1000,1000", (1000, 750)), (",300", (400, 300))):
        im = _image(shim, f"/iiif/3/{name}/full/{size}/0/default.jpg")
        assert im.size == want
        assert _check_colours(im, (0, 0, WIDTH, HEIGHT), f"{name} full/{size}") > 0


@pytest.mark.parametrize("name", MASTERS)
def test_regions_near_the_edges(shim: Process, name: str) -> None:
    regions = [
        ((WIDTH - 4000, HEIGHT - 3000, 4000, 3000), "500,"),  # bottom right, reduced
        ((0, HEIGHT - 2001, 5001, 2001), "640,"),  # bottom left, odd sizes
    ]
    if name.endswith("tif"):  # read by window: full resolution near the edges too
        regions += [
            ((WIDTH - 300, HEIGHT - 200, 300, 200), "max"),
            ((WIDTH - 257, 4999, 257, 2), "max"),
            ((WIDTH - 1, 0, 1, 4000), "1,500"),  # the last column
            ((9900, 7400, 200, 200), "^400,"),  # upscaled across four blocks
        ]
    for (x, y, w, h), size in regions:
        im = _image(shim, f"/iiif/3/{name}/{x},{y},{w},{h}/{size}/0/default.png")
        if size == "max":
            assert im.size == (w, h)
        elif size.endswith(","):
            assert im.width == int(size.strip("^,"))
        else:
            assert im.size == (1, 500)
        _check_colours(im, (x, y, w, h), f"{name} {x},{y},{w},{h}")


@pytest.mark.parametrize("name", ["huge-jpg", "huge-jp2"])
def test_whole_source_masters_serve_tiles_that_fit_the_budget(shim: Process, name: str) -> None:
    """Decoded whole at a reduced size: from 1/4 (5000x3750, 75 MB) the decode fits 256 MB."""
    for sf in (4, 8, 32):
        for col, row in [(0, 0), *_tiles_of_level(sf, 512)[-1:]]:
            _tile(shim, name, sf, col, row, tile=512)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("huge-jpg", "0,0,512,512/512,512"),  # a full-size tile needs the whole JPEG decoded
        ("huge-jp2", "19968,14848,32,152/32,152"),
        ("huge-jpg", "0,0,20000,15000/10000,"),  # 1/2: 300 MB
        ("huge-tif", "full/max"),  # the whole master at full size
    ],
)
def test_more_than_the_whole_budget_is_refused_at_once(shim: Process, name: str, path: str) -> None:
    answer = request(shim.port, f"/iiif/3/{name}/{path}/0/default.jpg")
    assert answer.status == 501, answer.body[:300]
    text = answer.body.decode()
    assert "memory budget of 256 MB" in text, text
    assert "MB of image memory" in text


# --- memory under load ------------------------------------------------------------------------


def sweep_paths() -> list[str]:
    """Tiles of every level of the TIFF pyramids (a sample of the full-size ones, all of the
    rest), the reduced tiles of the JPEG and JPEG 2000 that fit the budget, small full images."""
    paths = []
    for name in ("huge-tif", "huge-subifd"):
        for sf in (1, 2, 4, 8, 16, 32, 64, 128):
            span = 256 * sf
            cols, rows = math.ceil(WIDTH / span), math.ceil(HEIGHT / span)
            step = 1 if sf >= 4 else (7 if sf == 2 else 19)
            for index in range(0, cols * rows, step):
                col, row = index % cols, index // cols
                x, y = col * span, row * span
                w, h = min(span, WIDTH - x), min(span, HEIGHT - y)
                size = f"{math.ceil(w / sf)},{math.ceil(h / sf)}"
                paths.append(f"/iiif/3/{name}/{x},{y},{w},{h}/{size}/0/default.jpg")
    for name in ("huge-jpg", "huge-jp2"):
        for sf in (4, 8):
            span = 512 * sf
            for x in range(0, WIDTH, span * 2):
                w, h = min(span, WIDTH - x), span
                paths.append(f"/iiif/3/{name}/{x},0,{w},{h}/{math.ceil(w / sf)},/0/default.jpg")
        paths.append(f"/iiif/3/{name}/full/512,/0/default.jpg")
    return paths


def sweep(port: int, paths: list[str], clients: int) -> dict[int, int]:
    """Every path requested once by ``clients`` concurrent clients; answers counted by status."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    queue = list(reversed(paths))

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            status = request(port, path, timeout=300).status
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_peak_memory_stays_within_the_budget_under_16_clients(
    huge_masters: Path, tmp_path: Path
) -> None:
    proc = start_shim(shim_config(tmp_path, huge_masters), tmp_path)
    try:
        for name in MASTERS:  # everything imported and set up once
            _image(proc, f"/iiif/3/{name}/full/64,/0/default.jpg")
        before = memory_of(proc.proc.pid)
        paths = sweep_paths()
        statuses = sweep(proc.port, paths, clients=16)
        after = memory_of(proc.proc.pid)
    finally:
        proc.stop()
    assert statuses == {200: len(paths)}, statuses
    # what the budget covers (decoding and finishing), the decoded-source cache (outside the
    # budget), and 48 MB for sixteen connections, the encoders' buffers and the allocator
    peak = after["VmHWM"] - before["VmRSS"]
    print(f"peak {peak / MB:.0f} MB over {before['VmRSS'] / MB:.0f} MB at rest")
    assert peak <= BUDGET + DECODED + 48 * MB, f"peak {peak / MB:.0f} MB over the resting size"
