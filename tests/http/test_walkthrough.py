"""The README's five-minute walkthrough, followed as written: its folder, its configuration, its
commands (``check-config``, then ``deploy/serve.sh`` with a relative ``--config``, as a user
runs them), the URLs it says to open, its ``object.yaml``, its CSV export and its IIPImage
line; checked by what a user would look at (the object list, the object page, the manifest,
an image's pixels)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from PIL import Image

from iiif_shim.config.settings import parse_settings
from tests.inprocess import InProcessShim
from tests.support import ROOT, Process, free_port

SECTION = (ROOT / "README.md").read_text().split("## Your own collection in five minutes")[1]
SECTION = SECTION.split("\n## ")[0]
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", SECTION, re.S)
STEPS = {int(n): text for n, text in re.findall(r"\*\*(\d)\. (.*?)(?=\*\*\d\. |\Z)", SECTION, re.S)}
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


def _commands() -> list[list[str]]:
    """Step 3's commands, each split into words, comments left out."""
    (block,) = re.findall(r"```sh\n(.*?)```", STEPS[3], re.S)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_walkthrough_serves_a_folder_of_objects(tmp_path: Path) -> None:
    collection, colours = _collection(tmp_path)
    config = _blocks("yaml")[0].replace("/srv/collection", str(collection))
    (tmp_path / "shim.yaml").write_text(config)
    (collection / "letter-1887" / "object.yaml").write_text(_blocks("yaml")[1])  # step 5
    described = yaml.safe_load(_blocks("yaml")[1])
    check, serve = _commands()
    assert check[:2] == [".venv/bin/iiif-shim", "check-config"]
    checked = subprocess.run(
        [sys.executable, "-m", "iiif_shim", *check[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert serve[:2] == ["bash", "deploy/serve.sh"]
    # set up first (serve.sh does it too, then finds nothing to do), so the start is quick
    subprocess.run(
        ["bash", "deploy/setup.sh", "serve"], cwd=ROOT, check=True, timeout=600, capture_output=True
    )
    port = free_port()
    shim = Process(
        ["bash", str(ROOT / serve[1]), *serve[2:], "--port", str(port), "--processes", "1"],
        port,
        tmp_path / "serve.log",
        cwd=tmp_path,  # the relative --config is read from the folder it is run in
    )
    try:
        # step 4: every address it names answers
        urls = re.findall(r"<http://127\.0\.0\.1:8182(/[^>]*)>|`(/[^`]+)`", STEPS[4])
        paths = [a or b for a, b in urls]
        assert len(paths) >= 4, paths
        for path in paths:
            assert shim.get(path).status == 200, path
        landing = shim.get("/").text
        assert all(name in landing for name in ("letter-1887", "herbarium-12"))
        page = shim.get("/objects/letter-1887")
        assert page.status == 200 and described["label"] in page.text
        manifest = json.loads(shim.get("/iiif/presentation/3/letter-1887/manifest").body)
        assert manifest["label"] == {"none": [described["label"]]}
        labels = [canvas["label"]["none"][0] for canvas in manifest["items"]]
        assert labels == [described["canvases"][p]["label"] for p in ("p1", "p2")]
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
    base = yaml.safe_load(_blocks("yaml")[0].replace("/srv/collection", str(collection)))
    catalogue = yaml.safe_load(_blocks("yaml")[2])
    source = catalogue["presentation"]["sources"]["catalogue"]
    (csv_text,) = _blocks("csv")
    csv = tmp_path / Path(source["path"]).name
    csv.write_text(csv_text)
    source["path"] = str(csv)
    config = tmp_path / "shim.yaml"
    config.write_text(yaml.safe_dump({**base, **catalogue}))
    rows = [line.split(",") for line in csv_text.splitlines()[1:]]
    shim = InProcessShim(config)
    try:
        manifest = json.loads(shim.get(f"/iiif/presentation/3/{rows[0][0]}/manifest").body)
        assert manifest["label"] == {"none": ["Letter to the Director, 1887"]}
        assert [c["label"]["none"][0] for c in manifest["items"]] == [r[-1] for r in rows]
    finally:
        shim.stop()


def test_the_walkthrough_iip_line_is_a_valid_backend(tmp_path: Path) -> None:
    line = re.search(r"`(\{type: iip,[^`]*\})`", STEPS[6])
    assert line is not None
    settings = parse_settings(
        {"backends": {"iip": yaml.safe_load(line.group(1))}, "routes": [{"backend": "iip"}]},
        tmp_path,
    )
    assert settings.backends["iip"].type_name == "iip"
