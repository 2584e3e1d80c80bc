"""A real shim process over the test images, shared by the HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Process, start_shim, write_config

CC_BY = "http://creativecommons.org/licenses/by/4.0/"


@pytest.fixture(scope="session")
def shim(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
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
    proc = start_shim(config, tmp)
    yield proc
    proc.stop()
