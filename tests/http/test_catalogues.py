"""Catalogues as museums export them, over real sockets: check-config reads every object source
and fails on one it cannot read; bad cells are left out (the object is served, its manifest
valid) and logged once, strict mode refuses; a row without its image is skipped and an object
with none is a 404 left out of the collection and the landing page; /health/ready, the metrics
and the landing page show each source's state."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
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
    assert page.status == 200 and 'Date</span></th><td>19th century</td>' in page.text
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
