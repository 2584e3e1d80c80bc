"""Deployment settings seen from outside: public_url, forwarded headers, limits (answered by the
application in process: ``tests/inprocess.py``), and the command (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import InProcessShim
from tests.support import ROOT, Process, free_port, write_config

CHECK = [sys.executable, "-m", "iiif_shim", "check-config"]


def _shim(tmp: Path, images: Path, extra: str) -> InProcessShim:
    config = write_config(
        tmp / "shim.yaml",
        f"""\
{extra}
backends:
  local: {{type: files, root: "{images}"}}
routes:
  - {{backend: local}}
""",
    )
    return InProcessShim(config)


@pytest.fixture
def make_shim(images: Path, tmp_path: Path) -> Iterator[object]:
    started: list[InProcessShim] = []

    def make(extra: str) -> InProcessShim:
        proc = _shim(tmp_path / str(len(started)), images, extra)
        started.append(proc)
        return proc

    (tmp_path / "0").mkdir()
    for i in range(1, 4):
        (tmp_path / str(i)).mkdir()
    yield make
    for proc in started:
        proc.stop()


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "images.example.org",
    "X-Forwarded-Prefix": "/public/iiif",
}


def test_forwarded_headers_ignored_by_default(make_shim) -> None:  # type: ignore[no-untyped-def]
    shim = make_shim("")
    doc = json.loads(shim.get("/iiif/3/quad/info.json", headers=FORWARDED).body)
    assert doc["id"] == f"http://127.0.0.1:{shim.port}/iiif/3/quad"


def test_trusted_forwarded_headers(make_shim) -> None:  # type: ignore[no-untyped-def]
    shim = make_shim("server: {trust_forwarded: true}")
    doc = json.loads(shim.get("/iiif/3/quad/info.json", headers=FORWARDED).body)
    assert doc["id"] == "https://images.example.org/public/iiif/3/quad"
    resp = shim.get("/iiif/2/quad", headers=FORWARDED)
    assert resp.header("Location") == "https://images.example.org/public/iiif/2/quad/info.json"
    link = shim.get("/iiif/3/quad/full/max/0/default.jpg", headers=FORWARDED).header("Link")
    assert link and link.startswith("<https://images.example.org/public/iiif/3/quad/full/max/")
    # the same process, asked directly, answers with its own address: ids are per request
    direct = json.loads(shim.get("/iiif/3/quad/info.json").body)
    assert direct["id"] == f"http://127.0.0.1:{shim.port}/iiif/3/quad"


def test_public_url(make_shim) -> None:  # type: ignore[no-untyped-def]
    shim = make_shim(
        'server: {public_url: "https://iiif.example.org/images/", trust_forwarded: true}'
    )
    doc = json.loads(shim.get("/iiif/2/quad/info.json", headers=FORWARDED).body)
    assert doc["@id"] == "https://iiif.example.org/images/iiif/2/quad"


def test_no_limits_means_no_upscaling(make_shim) -> None:  # type: ignore[no-untyped-def]
    shim = make_shim(
        "iiif: {max_width: null, max_height: null, max_area: null, max_source_pixels: 1000000}"
    )
    doc = json.loads(shim.get("/iiif/3/quad/info.json").body)
    assert "sizeUpscaling" not in doc["extraFeatures"] and "maxWidth" not in doc
    resp = shim.get("/iiif/3/quad/full/^600,/0/default.jpg")
    assert resp.status == 501 and "upscaling" in resp.text
    assert shim.get("/iiif/3/quad/full/^150,/0/default.jpg").status == 200
    assert shim.get("/iiif/2/quad/full/600,/0/default.jpg").status == 400
    big = shim.get("/iiif/3/chart/full/100,/0/default.jpg")  # 24 MP source over the limit
    assert big.status == 501 and "6000x4000" in big.text


def test_prefix_and_confined_clamp(make_shim) -> None:  # type: ignore[no-untyped-def]
    shim = make_shim(
        "iiif: {prefix: /images/iiif, clamp_confined_size: true, "
        "upscale_max_to_limits: true, max_width: 600, max_area: null}"
    )
    assert shim.get("/iiif/3/quad/info.json").status == 404
    doc = json.loads(shim.get("/images/iiif/3/quad/info.json").body)
    assert doc["id"].endswith("/images/iiif/3/quad")
    small = shim.get("/images/iiif/3/quad/full/!900,900/0/default.jpg").image()
    assert small.size == (300, 200)
    assert shim.get("/images/iiif/3/quad/full/^max/0/default.jpg").image().size == (600, 400)


def test_iiif_at_the_root_keeps_the_landing_page(make_shim) -> None:  # type: ignore[no-untyped-def]
    shim = make_shim('iiif: {prefix: ""}')
    doc = json.loads(shim.get("/3/quad/info.json").body)
    assert doc["id"] == f"http://127.0.0.1:{shim.port}/3/quad"
    assert shim.get("/").status == 200 and "/3/quad/info.json" in shim.get("/").text
    assert shim.get("/health").status == 200


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp)


def test_check_config_reports_three_mistakes(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    config = write_config(
        tmp_path / "bad.yaml",
        """\
server: {port: 8182, publik_url: "http://x"}
backends:
  archive: {type: http}
  samples: {type: files, root: ./images}
routes:
  - {backend: sampels}
""",
    )
    done = _run([*CHECK, str(config)], tmp_path)
    assert done.returncode == 1
    assert "3 problems" in done.stderr
    assert "server.publik_url: unknown key; did you mean 'public_url'?" in done.stderr
    assert "backends.archive.url: required" in done.stderr
    assert "routes[0].backend: no backend named 'sampels'; did you mean 'samples'?" in done.stderr


def test_check_config_accepts_and_summarises(tmp_path: Path) -> None:
    for config in sorted((ROOT / "config").glob("*.yaml")):
        done = _run([*CHECK, str(config)], tmp_path)
        assert done.returncode == 0, (config, done.stderr)
        assert "natively" in done.stdout and "Pillow does the rest" in done.stdout
    example = _run([*CHECK, str(ROOT / "config" / "example.yaml")], tmp_path).stdout
    assert "backend samples (files): natively tiled TIFFs: region and pyramid levels" in example
    djatoka = _run([*CHECK, str(ROOT / "config" / "djatoka.yaml")], tmp_path).stdout
    assert "natively region, size, rotation by 90s, formats jpg, png" in djatoka


def test_embedded_default_serves_samples(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "IIIF_SHIM_CONFIG"}
    proc = Process(
        [sys.executable, "-m", "iiif_shim", "serve", "--port", str(port)],
        port,
        tmp_path / "default.log",
        env=env,
        cwd=tmp_path,
    )
    try:
        page = proc.get("/")
        assert page.status == 200
        for ident in ("chart", "rings", "gray-gradient", "67352ccc-d1b0-11e1-89ae-279075081939"):
            assert f"/iiif/3/{ident}/info.json" in page.text
        doc = json.loads(proc.get("/iiif/3/chart/info.json").body)
        assert (doc["width"], doc["height"]) == (6000, 4000)
        assert len(doc["tiles"][0]["scaleFactors"]) >= 4  # deep zoom has levels to show
        thumb = proc.get("/iiif/2/chart/full/!240,240/0/default.jpg").image()
        assert thumb.size == (240, 160)
    finally:
        proc.stop()
    assert "embedded default" in (tmp_path / "default.log").read_text()


def test_serve_with_bad_config_exits_with_problems(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", "backends: {}\nroutes: []\n")
    done = _run([sys.executable, "-m", "iiif_shim", "serve", "--config", str(config)], tmp_path)
    assert done.returncode == 2 and "backends: required" in done.stderr
