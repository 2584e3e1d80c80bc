"""iiif-validator-ng (the IIIF community's newer validator, which compares pixels with libvips
references) against every backend, for Image API 3.0 and 2.x: 0 failures, with the Pillow
engine, and with the vips engine (``imaging.engine: vips``) over the files backend.

It needs Python 3.12+ and lives in its own venv (``.venv-validator-ng``, made by
``deploy/setup.sh``). It reads the level and the extras from info.json, always exits 0, and
prints ``✓ passed ✗ failed``. Its rotation tests draw random angles on every run (one for the
full image, two for random regions), so each backend is validated several times: every run
tries three more angles.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.contract.engines import shims_for
from tests.shims import BACKEND_NAMES
from tests.support import ROOT

VENV = Path(os.environ.get("IIIF_VALIDATOR_NG_VENV", ROOT / ".venv-validator-ng"))
SUMMARY_RE = re.compile(r"✓ (\d+) ✗ (\d+)")
RUNS = {"files": 6, "iip": 3, "deepzoom": 3}  # the rest: 2 runs (6 random angles) each


def validate(port: int, version: str, identifier: str) -> tuple[int, int, str]:
    binary = VENV / "bin" / "iiif-validator"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `bash deploy/test.sh`, which installs it")
    args = [str(binary), f"http://127.0.0.1:{port}/iiif/{version}"]
    if version == "2":
        args.append("--v2")
    args += ["--validation-id", identifier]
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    out = done.stdout + done.stderr
    found = SUMMARY_RE.findall(out)
    assert found, out
    passed, failed = found[-1]
    return int(passed), int(failed), out


# Pillow through every backend; libvips through the files backend (there the engine does
# every step, from decoding the master), with as many runs (random angles) as Pillow gets:
# doing every step it can (vips-all), and as configured by default (libvips where it measured
# faster)
ENGINE_BACKENDS = [
    *(("pillow", b) for b in BACKEND_NAMES),
    ("vips-all", "files"),
    ("vips", "files"),
]


@pytest.mark.servers
@pytest.mark.parametrize(("engine", "backend"), ENGINE_BACKENDS)
@pytest.mark.parametrize("version", ["3", "2"])
def test_iiif_validator_ng(
    request: pytest.FixtureRequest, engine: str, backend: str, version: str
) -> None:
    shim = shims_for(request, engine)[backend]
    for _ in range(RUNS.get(backend, 2)):
        passed, failed, out = validate(shim.process.port, version, shim.validator_id)
        assert failed == 0, out
        assert passed >= 100, out  # level 2 and every extra feature were tested
        assert "Detected compliance level: LEVEL_2" in out
