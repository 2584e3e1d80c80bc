"""``server.event_loop``: uvloop when installed (``auto``), asyncio's own on request, and a
config that requires uvloop where it is missing is refused up front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, start_shim, write_config


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_chosen_loop_serves(tmp_path: Path, images: Path, choice: str, expected: str) -> None:
    config = write_config(
        tmp_path / "shim.yaml",
        f"""\
server: {{event_loop: {choice}}}
backends:
  files: {{type: files, root: "{images}"}}
routes:
  - {{backend: files}}
""",
    )
    shim = start_shim(config, tmp_path)
    try:
        health = json.loads(shim.get("/health").body)
        assert health["event_loop"] == expected
        assert shim.get("/iiif/3/quad.png/full/150,/0/default.png").status == 200
    finally:
        shim.stop()


def test_uvloop_required_but_missing_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "shim.yaml", "server: {event_loop: uvloop}\n")
    code = (
        "import sys, importlib.util as u; real = u.find_spec;"
        "u.find_spec = lambda n, *a: None if n == 'uvloop' else real(n, *a);"
        "from iiif_shim.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "check-config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert "server.event_loop" in done.stderr and "iiif-shim[fast]" in done.stderr
