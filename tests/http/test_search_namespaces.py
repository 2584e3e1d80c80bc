"""One index, one configuration: two servers of two configurations given the same
``search.folder`` (the same SQLite file) keep their objects apart, even those of the same name:
each finds its own text only, and neither rebuilds the other's object (they rebuilt it at each
other's searches, and under concurrent requests one answered with the other's text). Also the
namespace of ``open_index``: ``search.namespace``, else one made from the config file's path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from iiif_shim.search.index import Namespaced, namespace_of, open_index
from iiif_shim.search.settings import SearchSettings
from iiif_shim.search.sqlite import SqliteIndex
from tests import ocr_files
from tests.support import Process, start_shim


def _site(root: Path, word: str, folder: Path) -> Path:
    root.mkdir()
    (root / "images").mkdir()
    Image.new("RGB", (400, 500), (220, 220, 220)).save(root / "images" / "page.png")
    (root / "p.xml").write_bytes(ocr_files.alto([[(word, (10, 10, 50, 20))]], (400, 500)))
    (root / "objects.csv").write_text("object,image,text\nfo,page,p.xml\n")
    config = ocr_files.catalogue_config(root, f"{{folder: '{folder}'}}")
    return config


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    tmp = tmp_path_factory.mktemp("namespaces")
    shared = tmp / "index"
    a = start_shim(_site(tmp / "a", "upperword", shared), tmp / "a")
    b = start_shim(_site(tmp / "b", "uniquehidden", shared), tmp / "b")
    yield a, b
    a.stop()
    b.stop()


def _total(shim: Process, q: str) -> int:
    answer = shim.get(f"/iiif/search/1/fo?q={q}", timeout=60)
    assert answer.status == 200, answer.text
    return int(json.loads(answer.body)["within"]["total"])


def _builds(shim: Process) -> int:
    return shim.log.read_text().count("object 'fo' indexed")


def test_two_configurations_on_one_folder_keep_their_objects_apart(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    for _ in range(3):
        assert (_total(a, "upperword"), _total(a, "uniquehidden")) == (1, 0)
        assert (_total(b, "uniquehidden"), _total(b, "upperword")) == (1, 0)
        terms = json.loads(a.get("/iiif/search/2/fo/autocomplete?q=u").body)
        assert [t["value"] for t in terms["items"]] == ["upperword"]
    # each indexed its object once: neither took the other's for a changed one of its own
    assert (_builds(a), _builds(b)) == (1, 1)


def test_the_namespace_of_an_index(tmp_path: Path) -> None:
    settings = SearchSettings(folder=tmp_path)
    assert namespace_of(settings, "/etc/a.yaml") != namespace_of(settings, "/etc/b.yaml")
    assert namespace_of(SearchSettings(namespace="prod"), "/etc/a.yaml") == "prod"
    one = open_index(settings, "/etc/a.yaml")
    other = open_index(settings, "/etc/b.yaml")
    assert isinstance(one, Namespaced) and isinstance(one.index, SqliteIndex)
    one.store("book", "sig-a", [])
    assert one.objects() == ["book"] and other.objects() == []
    assert other.state("book") is None
    other.store("book", "sig-b", [])
    one.drop("book")
    assert one.objects() == [] and other.objects() == ["book"]
    state = other.state("book")
    assert state is not None and state.signature == "sig-b"
    one.close()
    other.close()
