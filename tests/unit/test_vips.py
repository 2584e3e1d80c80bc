"""The vips engine (``imaging.engine: vips``): what it does apart from the Pillow engine.

A file's page and window are region reads (a tile outside the window is corrupted, and the read
still succeeds); headers are checked before any pixel is decoded (bombs refused, and costing
next to nothing); every step gives the pixels the Pillow engine gives, by size and colour; and
a config asking for vips where pyvips or libvips cannot load is a check-config error naming the
install command; and two shims, one per engine, serve the same regions of a pyramidal TIFF
through the ``files`` backend (windows of its pages).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from PIL import Image, ImageChops, ImageStat

from iiif_shim.base.errors import BackendError, NotImplementedFeature
from iiif_shim.iiif.profile import Format, Quality
from iiif_shim.iiif.resolve import Box
from iiif_shim.imaging import pillow
from iiif_shim.imaging.cost import Allowance
from iiif_shim.imaging.fetched import Fetched
from iiif_shim.imaging.registry import engine_named
from iiif_shim.imaging.vips import EVERYTHING, MEASURED, VipsDecoded, VipsEngine
from iiif_shim.model.plan import Steps
from tests.faulty import png_bomb
from tests.support import (
    BUNDLED,
    ROOT,
    Process,
    peak_rss_mb,
    start_shim,
    validator_image,
    write_config,
)

GB = 1024**3
PILLOW = engine_named("pillow")
VIPS = VipsEngine(EVERYTHING)  # libvips for every step it can do (``vips_steps: all``)
MEASURED_VIPS = VipsEngine(MEASURED)  # the default: libvips where it measured faster
OPEN = Allowance(10**9, 4 * GB)
# quadrant colours of the pyramid below: red, green / blue, white
QUADRANTS = ((220, 20, 20), (20, 200, 40), (30, 40, 210), (250, 250, 250))


def steps(
    scale: tuple[int, int],
    crop: Box | None = None,
    *,
    mirror: bool = False,
    degrees: float = 0,
    quality: Quality = Quality.DEFAULT,
    fmt: Format = Format.PNG,
) -> Steps:
    return Steps(crop, scale, mirror, degrees, quality, fmt)


def opened(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


def pixel(im: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = im.convert("RGB").getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4096x3072 pyramidal, tiled (256x256), deflated TIFF of four flat quadrants, with one
    tile of the full-resolution page (bottom right, far from every window read below)
    overwritten with garbage: reading it fails, so a read that succeeds never touched it."""
    half_w, half_h = 2048, 1536
    parts = [
        (pyvips.Image.black(half_w, half_h, bands=3) + list(colour)).cast("uchar")
        for colour in QUADRANTS
    ]
    top = parts[0].join(parts[1], "horizontal")
    bottom = parts[2].join(parts[3], "horizontal")
    whole = top.join(bottom, "vertical").copy(interpretation="srgb")
    path = tmp_path_factory.mktemp("pyramid") / "quadrants.tif"
    whole.tiffsave(
        str(path), tile=True, tile_width=256, tile_height=256, pyramid=True, compression="deflate"
    )
    with Image.open(path) as im:
        offsets, counts = im.tag_v2[324], im.tag_v2[325]  # TileOffsets, TileByteCounts
    last = len(offsets) - 1  # the bottom-right tile of page 0
    with path.open("r+b") as file:
        file.seek(offsets[last])
        file.write(b"\xff\x00\x13" * (counts[last] // 3))
    return path


def test_the_corrupted_tile_really_breaks_a_whole_read(pyramid: Path) -> None:
    fetched = Fetched(path=pyramid, described="backend 'files' file 'quadrants'")
    with pytest.raises(BackendError) as err:
        VIPS.render(fetched, steps((4096, 3072)), OPEN)
    assert err.value.kind == "not_image" and err.value.status == 502


def test_a_window_reads_only_its_tiles(pyramid: Path) -> None:
    # 600x400 around the centre of the full-resolution page: all four quadrants meet there
    window = Box(1748, 1336, 600, 400)
    fetched = Fetched(path=pyramid, described="w", page=0, window=window)
    out = opened(VIPS.render(fetched, steps((600, 400)), Allowance(10**9, GB, (600, 400))))
    assert out.size == (600, 400)
    assert pixel(out, 10, 10) == QUADRANTS[0] and pixel(out, 590, 10) == QUADRANTS[1]
    assert pixel(out, 10, 390) == QUADRANTS[2] and pixel(out, 590, 390) == QUADRANTS[3]
    assert pixel(out, 299, 199) == QUADRANTS[0] and pixel(out, 300, 200) == QUADRANTS[3]


def test_a_page_is_a_pyramid_level_and_steps_apply_to_its_window(pyramid: Path) -> None:
    # page 1 is 2048x1536; its window 1000,700 + 100x100 straddles the centre (1024, 768)
    fetched = Fetched(path=pyramid, described="p", page=1, window=Box(1000, 700, 100, 100))
    flipped = steps((50, 50), Box(0, 0, 100, 100), mirror=True, fmt=Format.JPG)
    out = opened(VIPS.render(fetched, flipped, Allowance(10**9, GB, (100, 100))))
    assert out.size == (50, 50)
    # mirrored: green (top right of the window) is now top left, blue bottom right
    assert close(pixel(out, 3, 3), QUADRANTS[1], 12) and close(pixel(out, 46, 46), QUADRANTS[2], 12)
    whole_page = Fetched(path=pyramid, described="p", page=2)
    small = opened(VIPS.render(whole_page, steps((1024, 768)), OPEN))
    assert small.size == (1024, 768) and pixel(small, 1000, 740) == QUADRANTS[3]


def test_a_window_is_checked_against_what_was_asked(pyramid: Path) -> None:
    fetched = Fetched(path=pyramid, described="w", window=Box(0, 0, 1200, 800))
    with pytest.raises(BackendError) as err:
        VIPS.render(fetched, steps((300, 200)), Allowance(10**9, GB, (300, 200)))
    assert err.value.kind == "bomb" and "1200x800 image where 300x200" in err.value.message
    with pytest.raises(NotImplementedFeature) as too_large:
        VIPS.render(fetched, steps((1200, 800)), Allowance(500_000, GB))
    assert too_large.value.status == 501


BOMB = png_bomb(20000, 20000)  # 1-bit, 400 M pixels: a few hundred kB, 800 MB decoded


def test_a_bomb_is_refused_from_its_header() -> None:
    bomb = Fetched(data=BOMB, described="b")
    with pytest.raises(BackendError) as err:
        VIPS.decode(bomb, 1, Allowance(5 * 10**8, GB, (256, 256)))
    assert err.value.kind == "bomb" and "20000x20000 image where 256x256" in err.value.message
    with pytest.raises(BackendError) as err:
        VIPS.render(bomb, steps((256, 256)), Allowance(5 * 10**8, 256 * 1024**2))
    # libvips holds a 1-bit pixel in one byte (Pillow: two, with its L copy)
    assert err.value.kind == "bomb" and "400000000 bytes" in err.value.message
    with pytest.raises(NotImplementedFeature) as too_large:
        VIPS.decode(bomb, 1, Allowance(100_000_000, GB))
    assert too_large.value.kind == "too_large"
    with pytest.raises(BackendError) as err:  # past what Pillow opens at all: as Pillow says
        VIPS.decode(Fetched(data=png_bomb(40000, 40000), described="b"), 1, OPEN)
    assert err.value.kind == "bomb"


def test_the_refused_bomb_costs_nothing_that_a_blind_libvips_decode_does() -> None:
    blind = peak_rss_mb(
        """
        import pyvips
        from tests.faulty import png_bomb
        pyvips.Image.new_from_buffer(png_bomb(20000, 20000), "").copy_memory()
        """
    )
    checked = peak_rss_mb(
        """
        from iiif_shim.imaging import cost, pillow
        from iiif_shim.base.errors import BackendError
        from iiif_shim.imaging.fetched import Fetched
        from iiif_shim.imaging.vips import EVERYTHING, VipsEngine
        from tests.faulty import png_bomb
        try:
            VipsEngine(EVERYTHING).decode(
                Fetched(data=png_bomb(20000, 20000), described="b"),
                1,
                cost.Allowance(500_000_000, 1 << 30, (256, 256)),
            )
        except BackendError:
            pass
        """
    )
    assert blind > 350 and checked < 150, (blind, checked)


SOURCES = {
    "png": validator_image(),  # 1000x1000, 10x10 flat squares
    "jpeg": BUNDLED / "chart.jpg",  # 6000x4000: decoded small on load
    "jp2": BUNDLED / "rings.jp2",  # 2400x1600: resolution levels
}


def _cases(width: int, height: int) -> list[Steps]:
    half = Box(0, 0, width // 2, height // 2)
    tile_w, tile_h = min(1024, width - 512), min(1024, height - 512)
    return [
        steps((300, 200), Box(100, 200, 300, 200)),  # a plain crop
        steps((tile_w // 2, tile_h // 2), Box(512, 512, tile_w, tile_h)),  # a tile, factor 2
        steps((77, 53), Box(101, 203, 301, 207)),  # off every reduced grid
        steps((width // 5, height // 5)),
        steps((width // 8, height // 7), mirror=True, degrees=90, quality=Quality.GRAY),
        steps((200, 150), half, degrees=30),
        steps((200, 150), half, mirror=True, degrees=200, fmt=Format.JPG),
        steps((300, 300), quality=Quality.BITONAL),
        steps((600, 450), Box(200, 100, 400, 300)),  # upscaled
        *(steps((240, 160), fmt=fmt) for fmt in Format if fmt is not Format.PNG),
    ]


def _render(engine: Any, path: Path, step: Steps) -> bytes:
    with Image.open(path) as im:
        fmt, (w, h) = im.format, im.size
    factor = engine.reduction(fmt, w, h, step)
    decoded = engine.decode(Fetched(path=path, described="x"), factor, OPEN)
    body: bytes = engine.finish(decoded, step)
    return body


@pytest.mark.parametrize("policy", ["all", "measured"])
@pytest.mark.parametrize("source", SOURCES)
def test_every_step_gives_the_pixels_pillow_gives(source: str, policy: str) -> None:
    path = SOURCES[source]
    engine = VIPS if policy == "all" else MEASURED_VIPS
    with Image.open(path) as im:
        width, height = im.size
    for step in _cases(width, height):
        what = f"{source} {step}"
        ours = _render(engine, path, step)
        theirs = _render(PILLOW, path, step)
        if step.format is Format.PDF:  # written by Pillow from the vips engine's pixels
            assert ours.startswith(b"%PDF") and theirs.startswith(b"%PDF"), what
            continue
        a, b = opened(ours), opened(theirs)
        assert a.format == b.format and a.size == b.size, what
        assert a.mode == b.mode or {a.mode, b.mode} <= {"RGB", "P"}, (what, a.mode, b.mode)
        inner = (8, 8, a.width - 8, a.height - 8)  # the edges of a turn are resampled apart
        diff = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA")).crop(inner)
        mean = max(ImageStat.Stat(diff).mean)
        assert mean < (9 if step.format in (Format.GIF, Format.JP2) else 5), (what, mean)
        if step.quality is Quality.BITONAL:
            assert set(a.convert("L").histogram()[1:255]) == {0}, what


@pytest.mark.parametrize("policy", ["all", "measured"])
def test_a_tiff_with_an_orientation_is_read_turned_as_pillow_reads_it(
    tmp_path: Path, policy: str
) -> None:
    """Pillow's libtiff decoder turns a TIFF as its Orientation tag says (and the facts give
    that size); libvips read it as stored, so the vips engine refused it as a bomb."""
    stored = Image.new("RGB", (300, 200), (220, 20, 20))
    stored.paste((30, 40, 210), (0, 0, 150, 200))  # stored: blue left half, red right half
    exif = Image.Exif()
    exif[pillow.ORIENTATION_TAG] = 6  # shown turned 90 degrees clockwise
    path = tmp_path / "turned.tif"
    stored.save(path, exif=exif)
    engine = VIPS if policy == "all" else MEASURED_VIPS
    with Image.open(path) as im:
        assert im.size == (200, 300)  # what the facts say
    step = steps((200, 300), fmt=Format.PNG)
    ours, theirs = opened(_render(engine, path, step)), opened(_render(PILLOW, path, step))
    assert ours.size == theirs.size == (200, 300)
    for x, y in ((100, 40), (100, 260)):  # blue on top, red below
        assert close(pixel(ours, x, y), pixel(theirs, x, y)), (x, y)
    assert close(pixel(ours, 100, 40), (30, 40, 210))


def test_stitched_pixels_and_backend_bytes() -> None:
    quad = Image.new("RGB", (300, 200), (255, 0, 0))
    quad.paste((0, 0, 255), (0, 100, 150, 200))
    turn = steps((100, 150), Box(0, 0, 150, 200), degrees=90)
    stitched = opened(VIPS.render(Fetched(image=quad, described="s"), turn, OPEN))
    assert stitched.size == (150, 100)
    # turned clockwise: the blue bottom-left quarter of the crop is now top left
    assert close(pixel(stitched, 20, 20), (0, 0, 255))
    assert close(pixel(stitched, 130, 80), (255, 0, 0))
    buf = io.BytesIO()
    quad.save(buf, "JPEG", quality=90)
    sent = Fetched(data=buf.getvalue(), described="b")
    gray = opened(VIPS.render(sent, steps((150, 100), quality=Quality.GRAY), OPEN))
    assert gray.mode == "L" and gray.size == (150, 100)
    assert abs(gray.getpixel((120, 20)) - 76) <= 3  # ITU-R 601 luma of red, as Pillow's
    same = Steps(None, (300, 200), False, 0, Quality.DEFAULT, Format.JPG, encoded=True)
    assert VIPS.render(sent, same, OPEN) is sent.data  # nothing to do: no second encode


def test_formats_libvips_is_not_used_for_go_through_pillow() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (12, 200, 99)).save(buf, "BMP")
    sent = Fetched(data=buf.getvalue(), described="b")
    out = opened(VIPS.render(sent, steps((32, 24)), OPEN))  # decoded by Pillow, PNG by libvips
    assert out.size == (32, 24) and close(pixel(out, 16, 12), (12, 200, 99))
    assert isinstance(VIPS.decode(sent, 1, OPEN), pillow.Decoded)
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (12, 200, 99)).save(png, "PNG")
    decoded = VIPS.decode(Fetched(data=png.getvalue(), described="b"), 1, OPEN)
    assert isinstance(decoded, VipsDecoded) and decoded.nbytes == 64 * 48 * 3


def test_the_measured_policy_reads_tiff_files_with_libvips_and_the_rest_with_pillow(
    pyramid: Path,
) -> None:
    # the corrupted tile is never read by a window: only a region read can answer this
    window = Fetched(path=pyramid, described="w", window=Box(0, 0, 512, 512))
    out = opened(MEASURED_VIPS.render(window, steps((256, 256)), OPEN))
    assert out.size == (256, 256) and pixel(out, 100, 100) == QUADRANTS[0]
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (12, 200, 99)).save(png, "PNG")
    decoded = MEASURED_VIPS.decode(Fetched(data=png.getvalue(), described="b"), 1, OPEN)
    assert isinstance(decoded, pillow.Decoded)  # Pillow decodes whole masters faster
    body = MEASURED_VIPS.finish(decoded, steps((32, 24), fmt=Format.GIF))
    assert opened(body).format == "GIF" and close(pixel(opened(body), 5, 5), (12, 200, 99))


def test_a_truncated_source_is_the_backends_fault() -> None:
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 60).convert("RGB").save(buf, "JPEG")
    cut = Fetched(data=buf.getvalue()[: len(buf.getvalue()) // 2], described="b")
    with pytest.raises(BackendError) as err:
        VIPS.render(cut, steps((200, 150)), OPEN)
    assert err.value.kind == "not_image"
    with pytest.raises(BackendError):
        VIPS.render(Fetched(data=b"\xff\xd8\xff" + bytes(50), described="b"), steps((2, 2)), OPEN)


def test_libvips_keeps_no_cache_and_one_thread_a_job() -> None:
    assert pyvips.cache_get_max() == 0 and pyvips.cache_get_max_mem() == 0
    assert pyvips.concurrency_get() == 1


def test_check_config_names_the_install_command_when_libvips_cannot_load(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    config = tmp_path / "shim.yaml"
    config.write_text(
        f"backends:\n  a: {{type: files, root: {images}}}\nroutes:\n  - {{backend: a}}\n"
        "imaging:\n  engine: vips\n"
    )
    run = [sys.executable, "-m", "iiif_shim", "check-config", str(config)]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # pyvips importable, libvips not: what a machine without Debian's libvips42 gives
    fake = tmp_path / "fake"
    (fake / "pyvips").mkdir(parents=True)
    (fake / "pyvips" / "__init__.py").write_text(
        "raise OSError(\"cannot load library 'libvips.so.42'\")\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    broken = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    out = broken.stdout + broken.stderr
    assert broken.returncode != 0, out
    assert "imaging.engine" in out and "pip install 'iiif-shim[vips]'" in out, out
    config.write_text(config.read_text().replace("engine: vips", "engine: magick"))
    wrong = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert wrong.returncode != 0 and "pillow, vips" in wrong.stdout + wrong.stderr


def test_a_subifd_pyramid_page_is_its_subifd(tmp_path: Path) -> None:
    # ``vips tiffsave --subifd``: the levels are SubIFDs of the first image, page k its k-th
    quadrants = pyvips.Image.new_from_file(str(validator_image())).extract_band(0, n=3)
    path = tmp_path / "subifd.tif"
    quadrants.tiffsave(str(path), tile=True, pyramid=True, subifd=True, compression="deflate")
    level = Fetched(path=path, described="s", page=1, window=Box(0, 0, 500, 500))
    out = opened(MEASURED_VIPS.render(level, steps((500, 500)), Allowance(10**9, GB, (500, 500))))
    assert out.size == (500, 500)  # the 500x500 level, all of it
    theirs = opened(PILLOW.render(level, steps((500, 500)), Allowance(10**9, GB, (500, 500))))
    diff = ImageChops.difference(out.convert("RGB"), theirs.convert("RGB"))
    assert max(ImageStat.Stat(diff).mean) < 2


@pytest.fixture(scope="module")
def pyramid_shims(
    pyramid: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Process]]:
    """A shim per engine over the files backend, serving the pyramid (whole tiles only)."""
    root = tmp_path_factory.mktemp("pyramid-root")
    quadrants = pyvips.Image.new_from_file(str(pyramid), page=1)  # 2048x1536, sound tiles
    quadrants.tiffsave(str(root / "quadrants.tif"), tile=True, pyramid=True, compression="deflate")
    shims: dict[str, Process] = {}
    try:
        for engine in ("pillow", "vips"):
            tmp = tmp_path_factory.mktemp(f"pyramid-{engine}")
            config = write_config(
                tmp / "shim.yaml",
                f"""\
                backends:
                  files: {{type: files, root: "{root}"}}
                routes:
                  - {{backend: files}}
                imaging: {{engine: {engine}}}
                """,
            )
            shims[engine] = start_shim(config, tmp)
        yield shims
    finally:
        for shim in shims.values():
            shim.stop()


@pytest.mark.parametrize(
    "path",
    [
        "900,600,300,200/max/0/default.jpg",  # a region at full size, across all four
        "0,0,2048,1536/512,/0/default.png",  # from a pyramid level
        "1000,700,100,100/50,/90/gray.png",
        "924,668,200,200/max/20/default.png",
    ],
)
def test_both_engines_serve_the_same_pyramid_regions(
    pyramid_shims: dict[str, Process], path: str
) -> None:
    images = {}
    for engine, shim in pyramid_shims.items():
        resp = shim.get(f"/iiif/3/quadrants/{path}")
        assert resp.status == 200, (engine, resp.text[:300])
        images[engine] = resp.image().convert("RGBA")
    # the vips shim really rendered with libvips (its step metric), from a window of a page
    metrics = pyramid_shims["vips"].get("/metrics").text
    assert 'iiif_shim_pillow_seconds_count{step="vips_render"}' in metrics
    ours, theirs = images["vips"], images["pillow"]
    assert ours.size == theirs.size
    inner = (4, 4, ours.width - 4, ours.height - 4)
    diff = ImageChops.difference(ours, theirs).crop(inner)
    assert max(ImageStat.Stat(diff).mean) < 3, (path, ImageStat.Stat(diff).mean)
