"""Catalogues as museums export them, over real sockets: check-config reads every object source
and fails on one it cannot read; bad cells are left out (the object is served, its manifest
valid) and logged once, strict mode refuses; a row without its image is skipped and an object
with none is a 404 left out of the collection and the landing page; /health/ready, the metrics
and the landing page show each source's state."""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.inprocess import InProcessShim
from tests.presentation_checks import check_v3
from tests.support import wait_until, write_config

CC_BY = "http://creativecommons.org/licenses/by/4.0/"
CATALOGUE = (
    "obj,img,title,date,rights,link,creator\n"
    "letter,p1,A letter,19th century,All rights reserved,not-a-url,A. Writer\n"
    "letter,,A letter,,,,\n"
    "letter,p2,A letter,,,,\n"
    f"map,p1,A map,1887,{CC_BY},http://example.org/map,\n"
    "empty,,Nothing,,,,\n"
)
COLUMNS = (
    "{object: obj, image: img, label: title, nav_date: date, rights: rights, see_also: link, "
    "metadata: [creator]}"
)


def _catalogue(tmp: Path, extra: str = "", strict: bool = False) -> Path:
    """The catalogue's config; ``extra``: another source, as one line of YAML."""
    images = tmp / "images"
    images.mkdir(exist_ok=True)
    for name, colour in (("p1", (200, 30, 40)), ("p2", (30, 160, 60))):
        Image.new("RGB", (120, 90), colour).save(images / f"{name}.jpg")
    (tmp / "objects.csv").write_text(CATALOGUE)
    (tmp / "no-image.csv").write_text("obj,title\nx,No image column\n")
    strict_line = "\n          strict: true" if strict else ""
    return write_config(
        tmp / "shim.yaml",
        f"""
        backends:
          local: {{type: files, root: "{images}"}}
        routes:
          - {{backend: local}}
        presentation:
          record_ttl: 0{strict_line}
          sources:
            cat: {{type: csv, path: objects.csv, columns: {COLUMNS}}}
            {extra}
        """,
    )


def _check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


BROKEN = {
    "missing": "missing: {type: csv, path: nowhere.csv, columns: {object: obj, image: img}}",
    "noimg": "noimg: {type: csv, path: no-image.csv, columns: {object: obj, image: img}}",
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_check_config_fails_on_a_source_it_cannot_read(tmp_path: Path, broken: str) -> None:
    config = _catalogue(tmp_path, BROKEN[broken])
    done = _check(config)
    assert done.returncode == 1, done
    assert ": OK" not in done.stdout
    name = broken
    reason = "cannot read nowhere.csv" if broken == "missing" else "no column 'img'"
    assert f"presentation.sources.{name}: cannot be read" in done.stderr, done
    assert reason in done.stderr
    as_json = json.loads(_check(config, "--json").stdout)
    assert as_json["ok"] is False and as_json["sources"][name]["state"] == "down"


def test_check_config_lists_bad_cells_with_file_line_and_column(tmp_path: Path) -> None:
    config = _catalogue(tmp_path)
    done = _check(config, "--sources")
    assert done.returncode == 0, done
    assert done.stdout.startswith(f"{config}: OK")
    out = done.stdout
    assert "presentation source cat (csv): 3 objects read" in out
    assert "objects.csv line 2, column 'date': '19th century'" in out, out
    assert "objects.csv line 2, column 'rights'" in out
    assert "objects.csv line 3, column 'img'" in out  # the row without its image
    assert "objects.csv line 6" in out and "[object not served]" in out
    doc = json.loads(_check(config, "--format", "json").stdout)
    cat = doc["sources"]["cat"]
    assert doc["ok"] is True and cat["state"] == "degraded"
    assert (cat["affected"], cat["unusable"], cat["skipped"]["rows"]) == (1, 1, 1)
    assert {"where": "objects.csv line 2", "column": "date", "object": "letter"}.items() <= next(
        p for p in cat["problems"] if p["column"] == "date"
    ).items()
    strict = _catalogue(tmp_path, strict=True)
    assert _check(strict).returncode == 1  # strict: those objects would be refused


@pytest.fixture()
def shim(tmp_path: Path) -> Iterator[InProcessShim]:
    served = InProcessShim(_catalogue(tmp_path, BROKEN["missing"]))
    yield served
    served.stop()


def _json(shim: InProcessShim, path: str) -> dict[str, Any]:
    resp = shim.get(path)
    assert resp.status == 200, resp.text
    doc: dict[str, Any] = json.loads(resp.body)
    return doc


def test_bad_cells_are_left_out_and_the_object_is_served(
    shim: InProcessShim, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="iiif_shim"):
        for _ in range(2):  # record_ttl 0: the record is built again; warned once all the same
            doc = _json(shim, "/iiif/presentation/3/letter/manifest")
    assert check_v3(doc) == []
    assert "navDate" not in doc and "rights" not in doc and "seeAlso" not in doc
    assert len(doc["items"]) == 2  # the row without its image is skipped
    shown = {json.dumps(m["label"]): m["value"] for m in doc["metadata"]}
    assert shown[json.dumps({"en": ["Rights"]})] == {"none": ["All rights reserved"]}
    # a date that is not a date: shown as the catalogue wrote it, without navDate
    assert shown[json.dumps({"en": ["Date"]})] == {"none": ["19th century"]}
    warned = [r.getMessage() for r in caplog.records if "left out of object 'letter'" in r.message]
    assert len(warned) == len(set(warned)) == 3, warned  # rights, link, the row
    page = shim.get("/objects/letter")
    assert page.status == 200 and "Date</span></th><td>19th century</td>" in page.text
    pdf = shim.get("/iiif/presentation/letter/pdf")
    assert pdf.status == 200 and pdf.body.startswith(b"%PDF-")
    good = _json(shim, "/iiif/presentation/3/map/manifest")
    assert good["navDate"] == "1887-01-01T00:00:00Z" and good["rights"] == CC_BY


def test_an_object_without_usable_rows_is_a_404_and_is_not_linked(shim: InProcessShim) -> None:
    resp = shim.get("/iiif/presentation/3/empty/manifest")
    assert resp.status == 404 and "object 'empty'" in resp.text and "no canvas" in resp.text
    assert shim.get("/objects/empty").status == 404
    collection = _json(shim, "/iiif/presentation/3/collection/cat")
    listed = [item["id"].split("/")[-2] for item in collection["items"]]
    assert listed == ["letter", "map"]
    landing = shim.get("/").text
    assert "/objects/letter" in landing and "/objects/empty" not in landing


def test_health_metrics_and_landing_show_each_source(shim: InProcessShim) -> None:
    def read() -> dict[str, Any]:
        resp = shim.get("/health/ready")
        assert resp.status == 200, resp.text  # a source that is down keeps the process ready
        body: dict[str, Any] = json.loads(resp.body)
        return body

    wait_until(lambda: "checked" in read()["sources"]["cat"], "the sources read in the background")
    body = read()
    cat, missing = body["sources"]["cat"], body["sources"]["missing"]
    assert cat["state"] == "degraded" and cat["objects"] == 3
    assert cat["skipped"] == {"cells": 2, "rows": 1, "columns": 0} and cat["unusable"] == 1
    assert missing["state"] == "down" and "cannot read nowhere.csv" in missing["error"]
    assert body["status"] == "degraded"
    metrics = shim.get("/metrics").text
    assert 'iiif_shim_source_up{source="missing"} 0.0' in metrics
    assert 'iiif_shim_source_up{source="cat"} 1.0' in metrics
    assert 'iiif_shim_source_skipped{kind="rows",source="cat"} 1.0' in metrics
    landing = shim.get("/").text
    assert "Object source <code>missing</code> cannot be read" in landing


def test_strict_mode_refuses_an_object_with_a_bad_cell(tmp_path: Path) -> None:
    served = InProcessShim(_catalogue(tmp_path, strict=True))
    try:
        resp = served.get("/iiif/presentation/3/letter/manifest")
        assert resp.status == 502 and "source 'cat'" in resp.text, resp.text
        assert served.get("/iiif/presentation/3/map/manifest").status == 200
    finally:
        served.stop()


def test_probe_object_prints_every_field_and_what_was_left_out(tmp_path: Path) -> None:
    config = _catalogue(tmp_path)

    def probe(name: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "iiif_shim", "probe", "--config", str(config), "--object", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done
        return done.stdout

    shown = probe("map")
    assert f"  rights: {CC_BY}\n" in shown
    assert "  date: 1887 (navDate 1887-01-01T00:00:00Z)\n" in shown
    assert "  see_also: http://example.org/map\n" in shown
    letter = probe("letter")
    assert "  note: objects.csv line 2, column 'date': '19th century' is not a" in letter
    assert "  left out: objects.csv line 3, column 'img': required, and empty" in letter
    assert "  metadata Date: 19th century\n" in letter
    assert "  metadata Rights: All rights reserved\n" in letter


def _slow_survey_config(tmp: Path, extra: str = "") -> Path:
    config = _catalogue(tmp)
    (tmp / "other.csv").write_text("obj,img\nother,p2\n")
    text = config.read_text().replace(
        "presentation:\n",
        "server: {workers: 1, request_timeout: 2}\npresentation:\n  check_interval: 1\n",
    )
    text = text.replace(
        "  sources:\n",
        "  sources:\n    other: {type: csv, path: other.csv, columns: {object: obj, image: img}}\n",
    )
    config.write_text(text + extra)
    return config


def test_images_are_served_while_a_catalogue_is_surveyed_and_it_is_read_once_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A survey that takes long (a huge catalogue, here one held until released) never takes
    the image threads, and is not started again while it runs."""
    from iiif_shim.presentation.sources.csv import CsvSource

    entered, release = threading.Event(), threading.Event()
    reads: collections.Counter[str] = collections.Counter()
    survey_table, survey = CsvSource._survey_table, CsvSource.survey

    def slow(self: CsvSource, *args: Any) -> Any:
        if self.name == "cat":
            entered.set()
            while not release.wait(0.05):  # held, until released (or its survey is given up)
                if callable(args[-1]) and args[-1]():
                    break
        return survey_table(self, *args)

    async def counted(self: CsvSource, *args: Any, **kwargs: Any) -> Any:
        reads[self.name] += 1
        return await survey(self, *args, **kwargs)

    monkeypatch.setattr(CsvSource, "_survey_table", slow)
    monkeypatch.setattr(CsvSource, "survey", counted)
    served = InProcessShim(_slow_survey_config(tmp_path))
    try:
        wait_until(entered.is_set, "the catalogue being surveyed")
        for width in (40, 41, 42):  # fresh renderings: each needs an image thread
            resp = served.get(f"/iiif/3/p1/full/{width},/0/default.jpg")
            assert resp.status == 200, resp.text
        wait_until(lambda: reads["other"] >= 3, "the other source read at two more intervals")
        assert reads["cat"] == 1  # the survey still running is not started again
        release.set()
        wait_until(
            lambda: "checked" in json.loads(served.get("/health/ready").body)["sources"]["cat"],
            "the survey landed",
        )
    finally:
        release.set()
        served.stop()


def test_check_config_reports_a_source_too_slow_to_read_and_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A survey past server.request_timeout (2 s here) and past check-config's own limit is a
    failure line naming the source and the limit: no traceback, and the command ends."""
    from iiif_shim.cli import main as cli
    from iiif_shim.presentation.sources.csv import CsvSource

    release = threading.Event()
    survey_table = CsvSource._survey_table

    def slow(self: CsvSource, *args: Any) -> Any:
        if self.name == "cat":
            while not release.wait(0.05):
                if callable(args[-1]) and args[-1]():
                    break
        return survey_table(self, *args)

    monkeypatch.setattr(CsvSource, "_survey_table", slow)
    monkeypatch.setattr(cli, "CHECK_TIMEOUT", 4.0)
    config = _slow_survey_config(tmp_path)
    saved = logging.getLogger("iiif_shim").level
    try:
        assert cli.check_config(str(config)) == 1
    finally:
        release.set()
        logging.getLogger("iiif_shim").setLevel(saved)
    out = capsys.readouterr()
    assert "presentation.sources.cat: cannot be read: not read within 4s" in out.err, out
    assert "Traceback" not in out.err
    assert "presentation source other (csv): 1 object read" in out.out


def sources_config(tmp: Path, body: str) -> Path:
    """A config serving an empty folder of images, with the object sources ``body`` (YAML at
    the indent of ``presentation.sources``)."""
    images = tmp / "images"
    images.mkdir(exist_ok=True)
    return write_config(
        tmp / "shim.yaml",
        f"""
        backends:
          local: {{type: files, root: "{images}"}}
        routes:
          - {{backend: local}}
        presentation:
          sources:
            {body}
        """,
    )


def test_check_config_fails_on_a_catalogue_that_serves_nothing(tmp_path: Path) -> None:
    from tests.support import free_port

    down = sources_config(
        tmp_path,
        f"api: {{type: json, url: 'http://127.0.0.1:{free_port()}/o/{{object}}', "
        "objects: [a, b, c], fields: {images: $.i}, retries: 0}",
    )
    done = _check(down)
    assert done.returncode == 1, done
    assert "presentation.sources.api: cannot be read: every object read failed (3)" in done.stderr
    (tmp_path / "allbad.csv").write_text("obj,img\na,\nb,\n")
    allbad = sources_config(
        tmp_path, "cat: {type: csv, path: allbad.csv, columns: {object: obj, image: img}}"
    )
    done = _check(allbad)
    assert done.returncode == 1, done
    assert "presentation.sources.cat: none of the 2 objects read can be served" in done.stderr


def test_check_config_json_has_one_shape_and_warnings_are_not_doubled(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: {x: {type: nope}}\n")
    doc = json.loads(_check(bad, "--json").stdout)
    assert set(doc) == {"config", "ok", "problems", "warnings", "sources"}
    assert doc["ok"] is False and isinstance(doc["problems"], list) and doc["problems"]
    assert all(isinstance(p, str) and "\n" not in p for p in doc["problems"])
    config = _catalogue(tmp_path, BROKEN["missing"])
    done = _check(config)
    assert done.stderr.count("nowhere.csv") == 1, done.stderr  # once, as a problem
    assert "nowhere.csv" not in done.stdout.replace(
        "CANNOT BE READ: source 'missing' cannot read nowhere.csv", ""
    )
    assert "left out of object" not in done.stderr  # the shim's own log lines: not shown
    doc = json.loads(_check(config, "--json").stdout)
    assert set(doc) == {"config", "ok", "problems", "warnings", "sources"}
    assert doc["sources"]["cat"]["problems_not_listed"] == 0


def test_a_catalogue_that_cannot_be_reached_shows_in_health_metrics_and_landing(
    tmp_path: Path,
) -> None:
    from iiif_shim.config.settings import load_settings
    from iiif_shim.web.app import reload
    from tests.support import free_port

    api = (
        f"api: {{type: json, url: 'http://127.0.0.1:{free_port()}/o/{{object}}', "
        "objects: [a, b, c], fields: {images: $.i}, retries: 0}"
    )
    config = _catalogue(tmp_path, api)
    served = InProcessShim(config)
    try:

        def sources() -> dict[str, Any]:
            found: dict[str, Any] = json.loads(served.get("/health/ready").body)["sources"]
            return found

        wait_until(lambda: "checked" in sources()["api"], "the sources read in the background")
        down = sources()["api"]
        assert down["state"] == "down" and "every object read failed" in down["error"], down
        assert 'iiif_shim_source_up{source="api"} 0.0' in served.get("/metrics").text
        assert "Object source <code>api</code> cannot be read" in served.get("/").text
        plain = _catalogue(tmp_path)  # the same, without the api source
        assert served._run(reload(served.server.app, lambda: load_settings(plain)))
        metrics = served.get("/metrics").text
        assert 'source="api"' not in metrics and 'iiif_shim_source_up{source="cat"}' in metrics
    finally:
        served.stop()
