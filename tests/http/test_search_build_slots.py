"""Indexing on demand when a text server hangs, over a real shim and a real misbehaving text
server (``tests/faulty.py``: ``/stall/`` never answers): the build of an object whose text is
there holds only the build slot of that server, so an object of local files is indexed and
searched meanwhile (it answered 503 "being indexed" for as long as the other's reads took); an
object waiting for a slot is said to be waiting for one, not "being indexed", and leaves the
line when nobody waits for it any more (abandoned waiters filled the line for minutes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import ocr_files
from tests.support import Process, start_faulty, start_shim


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    tmp = tmp_path_factory.mktemp("build-slots")
    (tmp / "images").mkdir()
    (tmp / "ocr").mkdir()
    Image.new("RGB", (400, 500), (220, 220, 220)).save(tmp / "images" / "page.png")
    (tmp / "ocr" / "lake.xml").write_bytes(
        ocr_files.alto([[("lake", (10, 10, 50, 20))]], (400, 500))
    )
    upstream = start_faulty(tmp / "ocr", tmp)
    origin = f"http://127.0.0.1:{upstream.port}"
    rows = ["object,image,text", "local,page,ocr/lake.xml"]
    rows += [f"slow{n},page,{origin}/stall/{n}.xml" for n in range(1, 4)]
    (tmp / "objects.csv").write_text("\n".join(rows) + "\n")
    config = ocr_files.catalogue_config(
        tmp, "{folder: index, build_wait: 1}", text_origins=f"{origin}/"
    )
    process = start_shim(config, tmp)
    yield process
    process.stop()
    upstream.stop()


def test_a_hung_text_server_holds_only_its_own_build_slot(shim: Process) -> None:
    slow = shim.get("/iiif/search/2/slow1?q=lake", timeout=60)
    assert slow.status == 503, slow.text
    assert "is being indexed (0 of 1 pages done)" in slow.text, slow.text
    # an object of local files, never indexed: indexed and searched while slow1's read hangs
    local = shim.get("/iiif/search/2/local?q=lake", timeout=60)
    assert local.status == 200, local.text
    assert len(json.loads(local.body)["items"]) == 1
    # another object of the hung server waits for that server's slot, and says so
    waiting = shim.get("/iiif/search/2/slow2?q=lake", timeout=60)
    assert waiting.status == 503, waiting.text
    said = "is waiting for an indexing slot (1 objects from the same place being indexed, 1 "
    assert said in waiting.text, waiting.text
    assert 1 <= int(waiting.header("Retry-After") or 0) <= 60
    # nobody waits for slow2 now: it left the line, so slow3 is the only one waiting
    third = shim.get("/iiif/search/2/slow3?q=lake", timeout=60)
    assert third.status == 503, third.text
    assert said + "waiting, this one included)" in third.text, third.text
    assert "Traceback" not in Path(shim.log).read_text()
