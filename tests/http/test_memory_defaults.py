"""At the default memory budget (derived from the machine), a full-size arbitrary rotation of
an ordinary 24 MP master is served; with a budget too small for two at once, a burst of them
queues, and what waits past ``server.memory_wait`` gets 503 with ``Retry-After``."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from iiif_shim.iiif.resolve import rotated_size
from tests.support import BUNDLED, Process, Response, start_shim, write_config

CHART = "chart"  # the bundled 6000x4000 JPEG


def _config(tmp: Path, server: str) -> Path:
    return write_config(
        tmp / "shim.yaml",
        f"server: {{{server}}}\n"
        "cache: {image_bytes: 0, decoded_bytes: 0}\n"
        f'backends: {{masters: {{type: files, root: "{BUNDLED}"}}}}\n'
        "routes: [{backend: masters}]\n",
    )


@pytest.fixture(scope="module")
def default_shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("default-budget")
    # two processes, each with half the budget, as the defaults give on a machine of 2 CPUs
    proc = start_shim(_config(tmp, "request_timeout: 120"), tmp, "--processes", "2")
    yield proc
    proc.stop()


def test_a_full_size_turn_of_a_24mp_master_is_served_at_the_defaults(
    default_shim: Process,
) -> None:
    answer = default_shim.get(f"/iiif/3/{CHART}/full/max/37/default.jpg", timeout=120)
    assert answer.status == 200, answer.text[:300]
    image = Image.open(io.BytesIO(answer.body))
    assert image.size == rotated_size(6000, 4000, 37)  # on its tight box


def test_a_burst_queues_for_memory_then_sheds_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("burst")
    # room for one turn at a time (about 400 MB each), two threads: the rest wait for memory
    server = "memory_budget: 629145600, memory_wait: 1, workers: 2, request_timeout: 120"
    proc = start_shim(_config(tmp, server), tmp)
    try:
        answers: list[Response] = []

        def one(i: int) -> None:
            path = f"/iiif/3/{CHART}/full/max/{30 + i}/default.jpg"
            answers.append(proc.get(path, timeout=120))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(a.status for a in answers)
        assert 200 in statuses and 503 in statuses, statuses
        assert set(statuses) <= {200, 503}, statuses
        for shed in (a for a in answers if a.status == 503):
            assert shed.header("Retry-After") == "1", shed.text
            assert "memory for decoding images stayed in use" in shed.text, shed.text
    finally:
        proc.stop()
