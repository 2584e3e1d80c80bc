"""The cost model against real peaks: for a few requests of the bundled test images, each run
in a fresh process by ``bench/cost_model.py --one`` (the kernel's high-water mark of resident
memory over the request, C allocations included), the estimate is at least the measured peak
and at most 1.3 times it, or a few MB over it for a small output (``bench.cost_model.within``).
A ratio of memory, not a timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench.cost_model import within
from tests.support import BUNDLED, ROOT


@pytest.mark.parametrize(
    ("image", "path", "engine"),
    [
        ("chart.jpg", "full/max/37/default.jpg", "pillow"),  # 6000x4000, a full-size turn
        ("chart.jpg", "full/max/!90/default.jpg", "pillow"),
        ("chart.jpg", "full/max/0/default.jpg", "pillow"),  # the decoded source, not copied
        ("chart.jpg", "full/max/37/default.jpg", "vips"),
        ("chart.jpg", "full/max/37/default.jpg", "vips-all"),  # libvips decodes, streams the turn
        ("gray-gradient.png", "full/max/37/default.png", "pillow"),  # L, turned with alpha
        ("chart.jpg", "full/1000,/90/default.png", "vips-all"),  # small: a few MB over at most
        # an untiled JPEG 2000: OpenJPEG's 32-bit copy of the whole image and its codestream,
        # counted from the codestream's tiling and size in the facts (were 0.25 and 0.70)
        ("rings.jp2", "full/max/0/default.jpg", "pillow"),
        ("rings.jp2", "full/max/37/default.jpg", "pillow"),
        ("rings.jp2", "full/max/0/default.jpg", "vips-all"),
        ("rings.jp2", "full/150,/0/default.jpg", "pillow"),  # at 1/16: its codestream, mostly
        # tiled JPEG 2000s: OpenJPEG sets up every tile of the grid before decoding any, and
        # that memory stays in the heap while finishing (were 0.19, 0.90 and 0.51 of their peaks)
        ("chart-t64.jp2", "full/500,/0/default.jpg", "pillow"),  # 3000x2000, 1,504 tiles
        ("chart-t64.jp2", "full/2000,/0/default.jpg", "pillow"),
        ("chart-t256.jp2", "full/500,/0/default.jpg", "vips"),  # 6000x4000, 384 tiles
        # libvips reading it reduced opens the page's header at full size, then the reduced
        # page's: each sets up the whole grid, both at once (was 0.77 of its peak)
        ("chart-t64.jp2", "full/500,/0/default.jpg", "vips-all"),
        # a window of a tiled TIFF that libvips reads itself (was counted as Pillow reads it)
        ("chart-tiled.tif", "1000,1000,2000,2000/max/0/default.jpg", "vips"),
        ("chart-tiled.tif", "1000,1000,2000,2000/max/0/default.jpg", "vips-all"),
    ],
)
def test_the_estimate_is_never_under_the_measured_peak_and_close_to_it(
    tmp_path: Path, image: str, path: str, engine: str
) -> None:
    master = tmp_path / image
    if image == "chart-tiled.tif":  # the 6000x4000 JPEG as a pyramidal TIFF of 256x256 tiles
        import pyvips

        pyvips.Image.new_from_file(str(BUNDLED / "chart.jpg")).tiffsave(
            str(master), tile=True, pyramid=True, tile_width=256, tile_height=256
        )
    elif image.startswith("chart-t"):  # the JPEG as a lossy JPEG 2000 of 6 levels, tiled
        tile = int(image.removeprefix("chart-t").removesuffix(".jp2"))
        chart = Image.open(BUNDLED / "chart.jpg")
        chart = chart.resize((3000, 2000)) if tile < 256 else chart
        options = {"irreversible": True, "quality_mode": "rates", "quality_layers": [20]}
        chart.save(master, "JPEG2000", tile_size=(tile, tile), num_resolutions=6, **options)
    else:
        shutil.copy(BUNDLED / image, master)
    with Image.open(master) as im:  # the warm-up copy the measurement first runs on
        im.resize((64, 48)).save(tmp_path / f"small-{image}")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cost_model.py"), "--one", str(master), path, engine],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert within(found["estimate"], found["measured"]), found


def test_the_rule_is_a_ratio_for_large_peaks_and_a_few_mb_for_small_ones() -> None:
    mb = 1024 * 1024
    assert within(130 * mb, 100 * mb) and not within(131 * mb, 100 * mb)
    assert not within(99 * mb, 100 * mb)  # never under
    assert within(7 * mb, 3 * mb) and not within(8 * mb, 3 * mb)
