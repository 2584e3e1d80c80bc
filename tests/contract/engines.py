"""The shims of ``tests/conftest.py``'s ``backend_shims`` again, rendering with libvips, and
the choice between them for tests parametrized by engine.

Engines: ``pillow`` (``backend_shims`` itself), ``vips`` (``imaging.engine: vips``: libvips for
the steps it was measured faster at) and ``vips-all`` (``vips_steps: all``: libvips for every
step it can do). The fixtures are imported by the conftest of each folder that runs
engine-parametrized tests (the contract suite, the validators); each engine's shims start once
per test session, whichever folder asks first, and stop at its end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import IipServer
from tests.shims import BackendShim, running_shims, servers_of
from tests.support import Process

ENGINES = ("pillow", "vips", "vips-all")
IMAGING = {
    "vips": "imaging:\n  engine: vips\n",
    "vips-all": "imaging:\n  engine: vips\n  vips_steps: all\n",
}
_STARTED: dict[str, dict[str, BackendShim]] = {}


def _shims(
    engine: str,
    images: Path,
    nginx: Process,
    iip: IipServer,
    thumbor: Process,
    standins: dict[str, Process],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, BackendShim]]:
    if engine in _STARTED:  # started by the other folder's conftest in this session
        yield _STARTED[engine]
        return
    servers = servers_of(images, nginx, iip, thumbor, standins)
    try:
        with running_shims(servers, tmp_path_factory, f"{engine}-shim", IMAGING[engine]) as shims:
            _STARTED[engine] = shims
            yield shims
    finally:
        _STARTED.pop(engine, None)


@pytest.fixture(scope="session")
def vips_shims(
    images: Path,
    nginx: Process,
    iip: IipServer,
    thumbor: Process,
    standins: dict[str, Process],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, BackendShim]]:
    """One shim per backend type over its real server, with ``imaging.engine: vips``."""
    yield from _shims("vips", images, nginx, iip, thumbor, standins, tmp_path_factory)


@pytest.fixture(scope="session")
def vips_all_shims(
    images: Path,
    nginx: Process,
    iip: IipServer,
    thumbor: Process,
    standins: dict[str, Process],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, BackendShim]]:
    """The same with ``vips_steps: all``: libvips decodes, scales, turns and encodes."""
    yield from _shims("vips-all", images, nginx, iip, thumbor, standins, tmp_path_factory)


def shims_for(request: pytest.FixtureRequest, engine: str) -> dict[str, BackendShim]:
    """The shims rendering with ``engine`` (started only when a test asks for them)."""
    fixture = {"pillow": "backend_shims", "vips": "vips_shims", "vips-all": "vips_all_shims"}
    shims: dict[str, BackendShim] = request.getfixturevalue(fixture[engine])
    return shims
