"""The README's five-minute walkthrough, followed as written: its folder, its configuration,
its ``object.yaml``, its CSV source and its IIPImage line, served and checked by what a user
would look at (the object list, the object page, the manifest, an image's pixels)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from PIL import Image

from iiif_shim.config.settings import parse_settings
from tests.inprocess import InProcessShim
from tests.support import ROOT

SECTION = (ROOT / "README.md").read_text().split("## Your own collection in five minutes")[1]
SECTION = SECTION.split("\n## ")[0]
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", SECTION, re.S)
COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 200)]


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == kind]


def _collection(tmp: Path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """The folder of step 1, each image a plain colour; identifier -> its colour."""
    paths = [line.strip() for line in BLOCKS[0][1].splitlines() if line.strip()]
    root = Path(paths[0]).parent.parent
    colours = {}
    for path, colour in zip(paths, COLOURS, strict=True):
        file = tmp / Path(path).relative_to(root.parent)
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (640, 480), colour).save(file)
        colours[str(Path(path).relative_to(root).with_suffix(""))] = colour
    return tmp / root.name, colours


def _config(tmp: Path, text: str, collection: Path) -> Path:
    config = tmp / "shim.yaml"
    config.write_text(text.replace("/srv/collection", str(collection)))
    return config


def test_the_walkthrough_serves_a_folder_of_objects(tmp_path: Path) -> None:
    collection, colours = _collection(tmp_path)
    config = _config(tmp_path, _blocks("yaml")[0], collection)
    # step 3: check-config, as the README runs it
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # step 5: the object's own description
    described = yaml.safe_load(_blocks("yaml")[1])
    (collection / "letter-1887" / "object.yaml").write_text(_blocks("yaml")[1])
    shim = InProcessShim(config)
    try:
        assert "letter-1887" in shim.get("/").text and "herbarium-12" in shim.get("/").text
        page = shim.get("/objects/letter-1887")
        assert page.status == 200 and described["label"] in page.text
        manifest = json.loads(shim.get("/iiif/presentation/3/letter-1887/manifest").body)
        assert manifest["label"] == {"none": [described["label"]]}
        canvases = manifest["items"]
        assert [c["label"]["none"][0] for c in canvases] == ["Recto", "Verso"]
        for identifier, colour in colours.items():
            encoded = identifier.replace("/", "%2F")
            info = json.loads(shim.get(f"/iiif/3/{encoded}/info.json").body)
            assert (info["width"], info["height"]) == (640, 480)
            image = shim.get(f"/iiif/3/{encoded}/full/64,/0/default.png").image()
            assert image.size == (64, 48)
            centre = image.getpixel((32, 24))
            assert all(abs(a - b) <= 2 for a, b in zip(centre, colour, strict=True))
    finally:
        shim.stop()


def test_the_walkthrough_reads_a_catalogue_export(tmp_path: Path) -> None:
    collection, _ = _collection(tmp_path)
    base = yaml.safe_load(_blocks("yaml")[0])
    catalogue = yaml.safe_load(_blocks("yaml")[2])
    header = re.search(r"#\s*(\S+)", _blocks("yaml")[2]).group(1)  # type: ignore[union-attr]
    assert header == "object,image,title,page"
    csv = tmp_path / "catalogue.csv"
    csv.write_text(
        f"{header}\nletter-1887,letter-1887/p1,A letter,Recto\n"
        "letter-1887,letter-1887/p2,A letter,Verso\n"
    )
    catalogue["presentation"]["sources"]["catalogue"]["path"] = str(csv)
    config = _config(tmp_path, yaml.safe_dump({**base, **catalogue}), collection)
    shim = InProcessShim(config)
    try:
        manifest = json.loads(shim.get("/iiif/presentation/3/letter-1887/manifest").body)
        assert manifest["label"] == {"none": ["A letter"]}
        assert [c["label"]["none"][0] for c in manifest["items"]] == ["Recto", "Verso"]
    finally:
        shim.stop()


def test_the_walkthrough_iip_line_is_a_valid_backend(tmp_path: Path) -> None:
    line = re.search(r"`(\{type: iip,[^`]*\})`", SECTION)
    assert line is not None
    settings = parse_settings(
        {"backends": {"iip": yaml.safe_load(line.group(1))}, "routes": [{"backend": "iip"}]},
        tmp_path,
    )
    assert settings.backends["iip"].type_name == "iip"
