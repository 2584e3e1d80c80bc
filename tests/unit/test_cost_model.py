"""The cost model against real peaks: for a few requests of the bundled test images, each run
in a fresh process by ``bench/cost_model.py --one`` (the kernel's high-water mark of resident
memory over the request, C allocations included), the estimate is at least the measured peak
and at most 1.3 times it. A ratio of memory, not a timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support import BUNDLED, ROOT


@pytest.mark.parametrize(
    ("image", "path", "engine"),
    [
        ("chart.jpg", "full/max/37/default.jpg", "pillow"),  # 6000x4000, a full-size turn
        ("chart.jpg", "full/max/!90/default.jpg", "pillow"),
        ("chart.jpg", "full/max/37/default.jpg", "vips"),
        ("gray-gradient.png", "full/max/37/default.png", "pillow"),  # L, turned with alpha
    ],
)
def test_the_estimate_is_between_1_and_1_3_times_the_measured_peak(
    tmp_path: Path, image: str, path: str, engine: str
) -> None:
    master = tmp_path / image
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
    ratio = found["estimate"] / found["measured"]
    assert 1.0 <= ratio <= 1.3, found
