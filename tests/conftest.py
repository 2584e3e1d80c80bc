"""Session fixtures shared by every test folder: the test images and a real nginx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Process, free_port, make_images, need_tool, nginx_config


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def nginx(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real nginx serving the test images as static files."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = nginx_config(images, port, workdir)
    proc = Process([binary, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")
    yield proc
    proc.stop()
