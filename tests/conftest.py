"""Session fixtures shared by every test folder: the test images and the real servers; and
a cache folder of the session's own (``$XDG_CACHE_HOME``), so the search indexes of shims
started without ``search.folder`` (the embedded default) never go to the user's home."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import Postgres
from tests.servers import (
    IipServer,
    build_pyramids,
    standin_images,
    start_standin,
    start_thumbor,
)
from tests.shims import BackendShim, running_shims, servers_of
from tests.support import Process, free_port, make_images, need_tool, nginx_config


@pytest.fixture(scope="session", autouse=True)
def session_cache_home() -> Iterator[Path]:
    """``$XDG_CACHE_HOME`` of this test session (inherited by every shim a test starts)."""
    folder = Path(tempfile.mkdtemp(prefix="iiif-shim-tests-cache-"))
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def pyramids(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyramids(images, tmp_path_factory.mktemp("pyramids"))


@pytest.fixture(scope="session")
def nginx(
    images: Path, pyramids: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """A real nginx: the test images at /, DeepZoom pyramids at /dz/, Zoomify at /zoomify/."""
    binary = need_tool("nginx", "/usr/sbin/nginx")
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    aliases = {"/dz/": pyramids / "dz", "/zoomify/": pyramids / "zoomify"}
    conf = nginx_config(images, port, workdir, aliases)
    proc = Process([binary, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def iip(pyramids: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IipServer]:
    server = IipServer(pyramids / "tiff", tmp_path_factory.mktemp("iip"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def thumbor(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    proc = start_thumbor(images.parent, tmp_path_factory.mktemp("thumbor"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def standins(
    images: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Process]]:
    root = standin_images(images, tmp_path_factory.mktemp("standin-images"))
    workdir = tmp_path_factory.mktemp("standins")
    procs: dict[str, Process] = {}
    try:
        for kind in ("djatoka", "contentdm"):
            procs[kind] = start_standin(kind, root, workdir)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture(scope="session")
def backend_shims(
    images: Path,
    nginx: Process,
    iip: IipServer,
    thumbor: Process,
    standins: dict[str, Process],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, BackendShim]]:
    """One shim per backend type, each over its real server, all serving the validator image."""
    servers = servers_of(images, nginx, iip, thumbor, standins)
    with running_shims(servers, tmp_path_factory, "shim") as started:
        yield started


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL for the session (tests/postgres.py; skipped where it is not installed,
    a failure in CI): the URL of its ``postgres`` database, with a password it never checks.
    A test makes a database of its own with ``tests.postgres.new_database(postgres_dsn)``."""
    server = Postgres()
    yield server.dsn()
    server.remove()
