"""The official IIIF Image API validator (iiif-validator 1.0.5) against the running shim.

Every test the validator has for the version runs (``--level 3``: level 2 plus all optional
features), through every backend type over its real server (``tests/servers.py``), for Image
API 3.0 (``--version=3.0``) and 2.1 (``--version=2.0``, the validator's name for 2.x), with the
Pillow engine, and with the vips engine (``imaging.engine: vips``) through some of them.

iiif-validator 1.0.5's format_jp2, format_pdf and format_webp tests call Python 2's
``urllib.urlopen`` and fail under Python 3 against every server. ``deploy/setup.sh`` applies
``iiif-validator-1.0.5-py3-formats.patch`` (next to this file) to the validator's own venv: the
three tests then fetch with the validator's ``result.fetch`` and identify the bytes with
``magic.from_buffer`` / the RIFF header, as upstream pull request IIIF/image-validator#97 does.
Nothing else in the validator is changed, and these three tests are run, not skipped.
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

VALIDATOR_VENV = Path(os.environ.get("IIIF_VALIDATOR_VENV", ROOT / ".venv-validator"))
RESULT_RE = re.compile(r"^\[(\d+)\] test (\w+) (PASS|FAIL)$", re.M)
PATCHED = ("format_jp2", "format_pdf", "format_webp")


def validator() -> list[str]:
    script = VALIDATOR_VENV / "bin" / "iiif-validate.py"
    if not script.exists():
        pytest.fail(f"{script} is missing: run `bash deploy/test.sh`, which installs it")
    tests_dir = next((VALIDATOR_VENV / "lib").glob("python3*/site-packages/iiif_validator/tests"))
    if "result.fetch(url)" not in (tests_dir / "format_jp2.py").read_text():
        pytest.fail("iiif-validator is not patched for Python 3: run `bash deploy/test.sh`")
    return [str(VALIDATOR_VENV / "bin" / "python"), str(script)]


# Pillow through every backend. libvips doing every step (vips-all) through the backends
# whose deliveries it finishes in different ways: a whole master it decodes (files), pixels
# stitched from tiles (deepzoom) and scaled exports in a backend's bytes (iip); every backend
# again would add minutes for nothing new, as what the engine is given is one of these three.
# And the vips engine as configured by default (libvips where it measured faster) once.
ENGINE_BACKENDS = [
    *(("pillow", b) for b in BACKEND_NAMES),
    *(("vips-all", b) for b in ("files", "deepzoom", "iip")),
    ("vips", "files"),
]


@pytest.mark.servers
@pytest.mark.parametrize(("engine", "backend"), ENGINE_BACKENDS)
@pytest.mark.parametrize(("version", "expected_tests"), [("3.0", 45), ("2.0", 42)])
def test_official_validator_level3(
    request: pytest.FixtureRequest, engine: str, backend: str, version: str, expected_tests: int
) -> None:
    shim = shims_for(request, engine)[backend]
    args = [
        *validator(),
        "-s",
        f"127.0.0.1:{shim.process.port}",
        "-p",
        f"iiif/{version[0]}",
        "-i",
        shim.validator_id,
        f"--version={version}",
        "--level",
        "3",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    results = {name: verdict for _, name, verdict in RESULT_RE.findall(done.stderr)}
    failed = [name for name, verdict in results.items() if verdict == "FAIL"]
    assert not failed, f"validator failures {failed}:\n{done.stderr}"
    assert done.returncode == 0, done.stderr
    assert len(results) == expected_tests, sorted(results)
    for name in PATCHED:
        assert results[name] == "PASS"
