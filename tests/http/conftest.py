"""The shim over the test images, shared by the HTTP tests of what it answers (served in the test
process: ``tests/inprocess.py``; tests of the server process itself start the real command)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import InProcessShim
from tests.support import Process, start_shim, write_config

CC_BY = "http://creativecommons.org/licenses/by/4.0/"


def _config(images: Path, tmp: Path) -> Path:
    return write_config(
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


@pytest.fixture(scope="session")
def shim(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessShim]:
    served = InProcessShim(_config(images, tmp_path_factory.mktemp("shim")))
    yield served
    served.stop()


@pytest.fixture(scope="session")
def shim_process(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The same shim as the real command serves it, for what the server process adds around the
    application: the wire (aiohttp's own answers to requests its parser refuses), the guard."""
    tmp = tmp_path_factory.mktemp("shim-process")
    served = start_shim(_config(images, tmp), tmp)
    yield served
    served.stop()
