"""The shim over the test images, shared by the HTTP tests of what it answers (served in the test
process: ``tests/inprocess.py``; tests of the server process itself start the real command)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import InProcessShim
from tests.support import write_config

CC_BY = "http://creativecommons.org/licenses/by/4.0/"


@pytest.fixture(scope="session")
def shim(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessShim]:
    tmp = tmp_path_factory.mktemp("shim")
    config = write_config(
        tmp / "shim.yaml",
        f"""
        server:
          cache_control: "public, max-age=60"
        iiif:
          prefix: /iiif
          max_width: 5000
          max_height: 5000
          max_area: 16000000
          tile_size: 256
        backends:
          local: {{type: files, root: "{images}"}}
        routes:
          - {{match: "^licensed-(?P<rest>.+)$", backend: local, id: "{{rest}}", rights: "{CC_BY}"}}
          - {{backend: local}}
    """,
    )
    served = InProcessShim(config)
    yield served
    served.stop()
