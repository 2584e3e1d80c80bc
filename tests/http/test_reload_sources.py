"""A reload that removes an object source removes its metrics for good: the retired
configuration's background reads stop with it, so a read that was under way cannot bring the
removed source's ``iiif_shim_source_*`` series back while requests still finish on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iiif_shim.config.settings import load_settings
from iiif_shim.web.app import reload
from iiif_shim.web.state import LIVE
from tests.http.test_catalogues import sources_config
from tests.inprocess import InProcessShim
from tests.support import Process, start_faulty, wait_until


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "up").mkdir()
    server = start_faulty(root, tmp_path / "up")
    yield server
    server.stop()


def test_a_read_under_way_when_its_source_is_removed_leaves_no_metrics(
    upstream: Process, tmp_path: Path
) -> None:
    """A source whose objects take 3 s to answer is being read when a reload removes it,
    while a request still holds the old configuration: its series stay gone (before: the read
    ended on the old configuration and put them back, to stay)."""
    slow = (
        f"api: {{type: json, url: 'http://127.0.0.1:{upstream.port}/delay/3/{{object}}', "
        "objects: [a], fields: {images: $.i}, retries: 0}"
    )
    (tmp_path / "objects.csv").write_text("obj,img\nx,p1\n")
    local = "cat: {type: csv, path: objects.csv, columns: {object: obj, image: img}}"
    served = InProcessShim(sources_config(tmp_path, f"{local}\n            {slow}"))
    try:
        live = served.server.app[LIVE]
        old = live.current
        watch = old.presentation.watch
        wait_until(lambda: "api" in watch._reading, "the slow source being read")
        assert not watch._reading["api"].done()

        async def hold() -> None:
            old.users += 1  # a request still in flight on the old configuration

        served._run(hold())
        plain = sources_config(tmp_path, local)
        assert served._run(reload(served.server.app, lambda: load_settings(plain)))
        assert 'source="api"' not in served.get("/metrics").text
        wait_until(lambda: watch._reading["api"].done(), "the read under way ended", 15)
        metrics = served.get("/metrics").text
        assert 'source="api"' not in metrics, [m for m in metrics.splitlines() if "api" in m]
        assert 'iiif_shim_source_up{source="cat"}' in metrics

        async def let_go() -> None:
            old.users -= 1

        served._run(let_go())
    finally:
        served.stop()
