"""``iiif-shim export``: a level-0 copy, written by the real command and served by plain nginx.

Each test reads the exported folder through a real nginx (which percent-decodes ``%2F`` before
it looks for a file) at the URLs the shim itself uses, and checks what it finds against the
source images, never against the export's own code: the tiles and sizes an info.json implies
are worked out here from the spec.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from PIL import Image, ImageChops, ImageStat

from iiif_shim.export import files, names
from tests.inprocess import InProcessShim
from tests.support import (
    ROOT,
    Process,
    free_port,
    need_tool,
    nginx_config,
    start_faulty,
    wait_until,
    write_config,
)
from tests.validator.test_export_level0 import documented_locations

SAFE = "-._~!$&'()*+,;=:"  # what the shim leaves unencoded in an identifier (docs/image-api.md)
LEVEL0_V2 = "http://iiif.io/api/image/2/level0.json"
IDENTIFIERS = ("quad", "big", "dir/page 1", "ünï/çà 2")


def _quadrants(size: tuple[int, int]) -> Image.Image:
    w, h = size
    im = Image.new("RGB", size, (255, 0, 0))
    im.paste((0, 255, 0), (w // 2, 0, w, h // 2))
    im.paste((0, 0, 255), (0, h // 2, w // 2, h))
    im.paste((255, 255, 255), (w // 2, h // 2, w, h))
    return im


def _sources(folder: Path) -> dict[str, Path]:
    """The images by identifier: two quadrant images, the small one also under a '/' with a
    space, and under non-ASCII folder and file names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dir").mkdir(exist_ok=True)
    (folder / "ünï").mkdir(exist_ok=True)
    paths = {
        "quad": folder / "quad.png",
        "big": folder / "big.png",
        "dir/page 1": folder / "dir" / "page 1.png",
        "ünï/çà 2": folder / "ünï" / "çà 2.png",
    }
    _quadrants((300, 200)).save(paths["quad"])
    _quadrants((1100, 700)).save(paths["big"])
    _quadrants((300, 200)).save(paths["dir/page 1"])
    _quadrants((200, 300)).save(paths["ünï/çà 2"])
    return paths


def _config(
    folder: Path,
    images: Path,
    backend: str | None = None,
    rows: str = "",
    extra: str = "",
    server: str = "",
) -> Path:
    """The shim's configuration: ``backend`` (else the files of ``images``), the catalogue's
    objects (and ``rows`` more), ``extra`` top-level YAML, ``server`` more keys of
    ``server:``."""
    (folder / "objects.csv").write_text(
        "object,image,title\n"
        "quads,quad,Quadrants\n"
        "quads,big,Quadrants\n"
        "pages,dir/page 1,Pages\n"
        "pages,ünï/çà 2,Pages\n" + rows,
        encoding="utf-8",
    )
    backends = backend or f'local: {{type: files, root: "{images}"}}'
    return write_config(
        folder / "shim.yaml",
        f"""
        server: {{processes: 1, workers: 2{server}}}
        iiif:
          prefix: /iiif
          tile_size: 256
        backends:
          {backends}
        routes:
          - {{backend: {backends.split(":")[0]}}}
        presentation:
          sources:
            catalogue:
              type: csv
              path: objects.csv
              columns: {{object: object, image: image, label: title}}
        {extra}
        """,
    )


def _export(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "iiif_shim", "export", "--config", str(config), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def _nginx(root: Path, port: int, workdir: Path) -> Process:
    binary = need_tool("nginx", "/usr/sbin/nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = nginx_config(root, port, workdir, extra=documented_locations())
    return Process([binary, "-c", str(conf), "-p", str(workdir)], port, workdir / "out.log")


class Served:
    def __init__(self, folder: Path, sources: dict[str, Path], config: Path, nginx: Process):
        self.folder = folder
        self.sources = sources
        self.config = config
        self.nginx = nginx
        self.base = f"http://127.0.0.1:{nginx.port}"

    def get(self, url_or_path: str) -> Any:
        path = url_or_path.removeprefix(self.base)
        return self.nginx.get(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Every object of the catalogue (so every image) exported with ``--all``, and nginx
    serving the folder at the base URL the export was given."""
    tmp = tmp_path_factory.mktemp("export")
    sources = _sources(tmp / "images")
    config = _config(tmp, tmp / "images")
    port = free_port()
    out = tmp / "out"
    done = _export(config, "--all", "--to", str(out), "--base-url", f"http://127.0.0.1:{port}/")
    assert done.returncode == 0, done.stderr
    nginx = _nginx(out, port, tmp / "nginx")
    yield Served(out, sources, config, nginx)
    nginx.stop()


def _encoded(identifier: str) -> str:
    return quote(identifier, safe=SAFE)


def _info(served: Served, identifier: str, version: str) -> dict[str, Any]:
    answer = served.nginx.get(f"/iiif/{version}/{_encoded(identifier)}/info.json")
    assert answer.status == 200, (identifier, version, answer.status)
    assert answer.header("Access-Control-Allow-Origin") == "*"
    assert "json" in (answer.header("Content-Type") or "")
    doc: dict[str, Any] = json.loads(answer.body)
    return doc


def test_info_json_is_level0_in_both_versions(served: Served) -> None:
    for identifier in IDENTIFIERS:
        source = Image.open(served.sources[identifier])
        v3 = _info(served, identifier, "3")
        assert v3["id"] == f"{served.base}/iiif/3/{_encoded(identifier)}"
        assert v3["type"] == "ImageService3" and v3["profile"] == "level0"
        assert (v3["width"], v3["height"]) == source.size
        assert not {"extraFeatures", "extraFormats", "extraQualities"} & set(v3)
        assert v3["tiles"] == [{"type": "Tile", "width": 256, "scaleFactors": v3["tiles"][0]
                                ["scaleFactors"]}]  # fmt: skip
        factors = v3["tiles"][0]["scaleFactors"]
        assert factors[0] == 1 and all(b == 2 * a for a, b in itertools.pairwise(factors))
        assert math.ceil(max(source.size) / factors[-1]) <= 256  # down to one tile
        assert v3["sizes"] and v3["sizes"][-1]["width"] == source.width

        v2 = _info(served, identifier, "2")
        assert v2["@id"] == f"{served.base}/iiif/2/{_encoded(identifier)}"
        assert v2["profile"][0] == LEVEL0_V2
        for extra in v2["profile"][1:]:  # the size limits only: nothing beyond level 0
            assert not {"formats", "qualities", "supports"} & set(extra)
        assert v2["tiles"] == [{"width": 256, "scaleFactors": factors}]
        assert [(s["width"], s["height"]) for s in v2["sizes"]] == [
            (s["width"], s["height"]) for s in v3["sizes"]
        ]


Implied = tuple[str, str, tuple[int, int], tuple[int, int, int, int]]


def _implied(info: dict[str, Any], v3: bool) -> Iterator[Implied]:
    """(region, size, pixel size, source box) of every image the spec says a level-0
    document implies (tiles at every scale factor, each size, the whole image), and the aliases
    OpenSeadragon asks for (``full`` region for a tile that is the whole image; 2.1: ``full``
    size for one as wide as the image)."""
    width, height = info["width"], info["height"]
    for tile in info["tiles"]:
        tw = tile["width"]
        th = tile.get("height", tw)
        for sf in tile["scaleFactors"]:
            for y in range(0, height, th * sf):
                for x in range(0, width, tw * sf):
                    w, h = min(tw * sf, width - x), min(th * sf, height - y)
                    out = (math.ceil(w / sf), math.ceil(h / sf))
                    box = (x, y, x + w, y + h)
                    size = f"{out[0]},{out[1]}" if v3 else f"{out[0]},"
                    yield f"{x},{y},{w},{h}", size, out, box
                    if (x, y, w, h) == (0, 0, width, height):
                        yield "full", size, out, box
                    if not v3 and out[0] == width:
                        yield f"{x},{y},{w},{h}", "full", out, box
    for entry in info["sizes"]:
        out = (entry["width"], entry["height"])
        yield "full", f"{out[0]},{out[1]}" if v3 else f"{out[0]},", out, (0, 0, width, height)
    for size in ("max",) if v3 else ("full", "max"):
        yield "full", size, (width, height), (0, 0, width, height)


def _like(got: Image.Image, source: Image.Image, box: tuple[int, int, int, int]) -> float:
    """The largest mean difference of a channel between ``got`` and the source's ``box``
    scaled to ``got``'s size."""
    expected = source.crop(box).resize(got.size, Image.Resampling.BOX)
    return max(ImageStat.Stat(ImageChops.difference(got.convert("RGB"), expected)).mean)


def test_every_tile_and_size_the_info_implies_is_there(served: Served) -> None:
    checked = 0
    for identifier in IDENTIFIERS:
        source = Image.open(served.sources[identifier]).convert("RGB")
        for version in ("3", "2"):
            info = _info(served, identifier, version)
            for region, size, out, box in _implied(info, version == "3"):
                path = f"/iiif/{version}/{_encoded(identifier)}/{region}/{size}/0/default.jpg"
                answer = served.nginx.get(path)
                assert answer.status == 200, path
                got = answer.image()
                # 2.1 `w,`: the height is the region's aspect, within a pixel of the tile's
                slack = 0 if version == "3" else 1
                assert got.width == out[0] and abs(got.height - out[1]) <= slack, path
                assert _like(got, source, box) < 12, path
                checked += 1
    assert checked > 100


def test_identifiers_with_slash_space_and_non_ascii_at_the_shims_urls(served: Served) -> None:
    """Plain nginx serves them at the very URLs (``%2F`` and all) the shim serves them at."""
    shim = InProcessShim(served.config)
    try:
        for identifier in ("dir/page 1", "ünï/çà 2"):
            path = f"/iiif/3/{_encoded(identifier)}"
            assert "%2F" in path and "%20" in path
            live, static = shim.get(f"{path}/info.json"), served.nginx.get(f"{path}/info.json")
            assert live.status == static.status == 200
            live_id, static_id = json.loads(live.body)["id"], json.loads(static.body)["id"]
            assert live_id.split("/iiif/", 1)[1] == static_id.split("/iiif/", 1)[1]
            tile = f"{path}/full/max/0/default.jpg"
            assert shim.get(tile).image().size == served.nginx.get(tile).image().size
    finally:
        shim.stop()


def test_hostile_identifiers_are_refused_and_the_others_exported(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "deep" / "out"
    hostile = ["../quad", "dir/../quad", "a//b", "/quad", "quad/", "./quad", "quad/full",
               "quad/info.json", "quad/0,0,10,10", "x" * 300]  # fmt: skip
    done = _export(
        config, "--identifier", "quad", *hostile, "--to", str(out), "--base-url", "http://x.org"
    )
    assert done.returncode == 1, done.stderr
    refused = [line for line in done.stderr.splitlines() if "refused identifier" in line]
    assert len(refused) == len(hostile), done.stderr
    for name in hostile:
        assert any(repr(name) in line for line in refused), name
    assert (out / "iiif" / "3" / "quad" / "info.json").is_file()
    assert not (out / "iiif" / "3" / "quad" / "full" / "info.json").exists()
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]  # nothing beside
    assert names.unfit("a\x00b", str(out)) is not None  # no command line can carry a NUL


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path) with its decoded pixels, or its bytes; the
    folder's own records (``.iiif-export/``: its lock, stamps) left out."""
    found: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_file() and not key.startswith(".iiif-export/"):
            found[key] = (
                Image.open(path).convert("RGB").tobytes()
                if path.suffix == ".jpg"
                else path.read_bytes()
            )
    return found


def test_sigint_then_resume_gives_the_tree_of_an_uninterrupted_run(tmp_path: Path) -> None:
    """Each master read through an upstream that answers after 0.2 s, with a decoded-source
    cache too small to keep it (each file reads it again), so the run is under way when SIGINT
    comes: it stops with 130, leaves no partial file, and a second run completes the same tree,
    file for file and pixel for pixel, as a run never interrupted."""
    images = tmp_path / "images"
    _sources(images)
    upstream = start_faulty(images, tmp_path)
    try:
        url = f"http://127.0.0.1:{upstream.port}/delay/0.2/{{id}}.png"
        backend = f'slow: {{type: http, url: "{url}"}}'
        small = "cache: {decoded_bytes: 1048576}"  # the export's: 4 MiB, big is 3.1 MB decoded
        config = _config(tmp_path, images, backend, extra=small, server=", memory_budget: 16777216")
        base = ("--base-url", "https://static.example.org/")
        whole, cut = tmp_path / "whole", tmp_path / "cut"
        done = _export(config, "--identifier", "big", "--to", str(whole), "--jobs", "8", *base)
        assert done.returncode == 0, done.stderr
        command = [sys.executable, "-m", "iiif_shim", "export", "--config", str(config),
                   "--identifier", "big", "--to", str(cut), "--jobs", "2", *base]  # fmt: skip
        with (tmp_path / "cut.log").open("w") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                tiles = cut / "iiif" / "3" / "big"
                wait_until(lambda: tiles.is_dir() and sum(1 for _ in tiles.rglob("*.jpg")) >= 6,
                           "six files written", 60)  # fmt: skip
                proc.send_signal(signal.SIGINT)
                assert proc.wait(30) == 130, (tmp_path / "cut.log").read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
        left = [
            p for p in cut.rglob("*") if p.name.endswith(".part") or p.name.startswith(".export-")
        ]
        assert left == []
        part = _tree(cut)
        complete = _tree(whole)
        assert 0 < len(part) < len(complete)
        assert all(complete[k] == v for k, v in part.items() if k in complete)
        again = _export(config, "--identifier", "big", "--to", str(cut), "--jobs", "8", *base)
        assert again.returncode == 0, again.stderr
        resumed = _tree(cut)
        assert sorted(resumed) == sorted(complete)
        assert resumed == complete
    finally:
        upstream.stop()


def test_dry_run_writes_nothing_and_counts_what_a_run_writes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    args = ("--all", "--to", str(out), "--base-url", "https://static.example.org")
    dry = _export(config, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not out.exists()
    estimate = int(dry.stdout.split("estimate: ", 1)[1].split(" files", 1)[0])
    real = _export(config, *args)
    assert real.returncode == 0, real.stderr
    assert f"exported: {estimate} files written" in real.stdout
    written = [
        p for p in out.rglob("*") if p.is_file() and not p.relative_to(out).parts[0].startswith(".")
    ]
    assert len(written) == estimate
    # a second run finds everything there and writes nothing
    again = _export(config, *args)
    assert again.returncode == 0 and f"{estimate} there already" in again.stdout, again.stdout


_NOT_FILES = {"Canvas", "sc:Canvas", "AnnotationPage", "Annotation", "oa:Annotation", "Range",
              "sc:Range", "sc:Sequence"}  # fmt: skip


def _urls(value: Any, key: str = "") -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """(key, URL, the object it identifies) of every URL in a document."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and v.startswith("http"):
                yield k, v, value if k in ("id", "@id") else None
            else:
                yield from _urls(v, k)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and item.startswith("http"):
                yield key, item, None
            else:
                yield from _urls(item, key)


def test_every_url_of_the_exported_documents_resolves(served: Served) -> None:
    """Every manifest and collection written, walked: each URL under the base that names a
    resource (not a canvas, annotation or range, which are names, not files) is a file nginx
    serves; images have the size the document gives; services are level-0 info.json."""
    documents = sorted(
        p for p in (served.folder / "iiif" / "presentation").rglob("*") if p.is_file()
    )
    assert len(documents) == 2 * (2 + 1 + 1)  # each version: 2 manifests, 2 collections
    resolved = 0
    for path in documents:
        doc = json.loads(path.read_text())
        assert not {"rendering", "homepage", "related"} & set(doc)  # not exported
        for key, url, owner in _urls(doc):
            if not url.startswith(served.base):
                continue
            kind = (owner or {}).get("type") or (owner or {}).get("@type")
            if kind in _NOT_FILES or key in ("on", "target", "canvases", "items"):
                continue
            profile = (owner or {}).get("profile")
            is_service = kind in ("ImageService3", "ImageService2") or (
                isinstance(profile, str) and "level0" in profile
            )
            answer = served.get(f"{url}/info.json" if is_service else url)
            assert answer.status == 200, (path, key, url)
            if is_service:
                assert "level0" in json.dumps(json.loads(answer.body)["profile"])
            elif kind in ("Image", "dctypes:Image"):
                assert answer.image().size == (owner["width"], owner["height"]), url  # type: ignore[index]
            resolved += 1
    assert resolved > 20
    index = served.nginx.get("/index.html")
    assert index.status == 200 and "/iiif/presentation/3/quads/manifest" in index.text


def test_the_exported_folder_holds_no_temporary_files(served: Served) -> None:
    assert [p for p in served.folder.rglob("*") if p.name.endswith(".part")] == []
    assert not (served.folder / ".export-running").exists()
    assert os.path.isfile(served.folder / ".iiif-export.json")


def test_the_documented_nginx_server_keeps_the_exports_records_private(served: Served) -> None:
    """nginx runs with the locations docs/export.md gives (every test of this module reads
    through them): the folder's own records and files being written are not served."""
    part = served.folder / "iiif" / "3" / "quad" / ".export-1.info.json.part"
    part.write_bytes(b"{}")
    try:
        for path in ("/.iiif-export.json", "/.iiif-export/record.json",
                     "/.iiif-export/lock", "/iiif/3/quad/.export-1.info.json.part"):  # fmt: skip
            assert served.nginx.get(path).status == 404, path
        assert served.nginx.get("/iiif/3/quad/info.json").status == 200
    finally:
        part.unlink()


# --- a folder exported into again, and what must never be published -------------------------

BASE = ("--base-url", "https://static.example.org")


def _jpegs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.jpg") if p.is_file())


def test_a_changed_source_is_exported_again_and_only_its_new_pixels_remain(
    tmp_path: Path,
) -> None:
    """A master replaced by another of another size and colour between two runs: the second
    run rebuilds the image, so its info.json says the new size and every file below it holds
    the new pixels (none of the old paths or pixels is left)."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    Image.new("RGB", (300, 200), (255, 0, 0)).save(images / "quad.png")
    first = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert first.returncode == 0, first.stderr
    new_time = (images / "quad.png").stat().st_mtime + 10
    Image.new("RGB", (260, 150), (0, 0, 255)).save(images / "quad.png")
    os.utime(images / "quad.png", (new_time, new_time))
    again = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert again.returncode == 0, again.stderr
    for version in ("3", "2"):
        folder = out / "iiif" / version / "quad"
        info = json.loads((folder / "info.json").read_text())
        assert (info["width"], info["height"]) == (260, 150)
        found = _jpegs(folder)
        assert found
        for path in found:
            pixels = Image.open(path).convert("RGB")
            assert pixels.width <= 260 and pixels.height <= 150, path
            red, _, blue = ImageStat.Stat(pixels).mean
            assert blue > 200 and red < 40, path


def test_collections_and_index_list_the_objects_of_every_run(tmp_path: Path) -> None:
    """``--object quads`` then ``--object pages`` into one folder: each version's collection
    lists both, each manifest's ``partOf`` (2.1 ``within``) is a collection listing it, and
    index.html links both."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    for name in ("quads", "pages"):
        done = _export(config, "--object", name, "--to", str(out), *BASE)
        assert done.returncode == 0, done.stderr
    presentation = out / "iiif" / "presentation"
    v3 = json.loads((presentation / "3" / "collection" / "catalogue").read_text())
    listed = {item["id"] for item in v3["items"]}
    v2 = json.loads((presentation / "2" / "collection" / "catalogue").read_text())
    listed_2 = {item["@id"] for item in v2["manifests"]}
    for name in ("quads", "pages"):
        manifest = json.loads((presentation / "3" / name / "manifest").read_text())
        assert manifest["id"] in listed
        for part in manifest["partOf"]:
            path = part["id"].removeprefix(BASE[1] + "/")
            collection = json.loads((out / path).read_text())
            assert manifest["id"] in {i["id"] for i in collection["items"]}
        manifest_2 = json.loads((presentation / "2" / name / "manifest").read_text())
        assert manifest_2["@id"] in listed_2
    index = (out / "index.html").read_text()
    assert "/3/quads/manifest" in index and "/3/pages/manifest" in index
    assert "quad</code>" in index and "dir/page 1</code>" in index


OSD_URLS = r"""
const fs = require('fs');
const stub = () => new Proxy(function () {}, {
  get: (t, k) => (k === Symbol.toPrimitive ? () => 0 : k in t ? t[k] : stub()),
  apply: () => stub(), construct: () => stub() });
globalThis.window = globalThis; globalThis.document = stub(); globalThis.self = globalThis;
globalThis.navigator = {userAgent: 'node', appVersion: '5.0', platform: 'Linux'};
globalThis.location = {href: 'http://x/', protocol: 'http:', search: '', hash: '', host: 'x',
  hostname: 'x', pathname: '/'};
globalThis.XMLHttpRequest = function () {}; globalThis.Image = function () {};
globalThis.HTMLElement = function () {}; globalThis.Element = function () {};
window.addEventListener = () => {};
eval(fs.readFileSync(process.argv[2], 'utf8'));
const out = {};
for (const path of process.argv.slice(3)) {
  const info = JSON.parse(fs.readFileSync(path, 'utf8'));
  for (const rule of ['6.1', 'mirador']) {
    const ts = new OpenSeadragon.IIIFTileSource(
      OpenSeadragon.IIIFTileSource.prototype.configure(info, path));
    if (rule === 'mirador') {  // Mirador 4.0.0's bundled rule for levelSizes, as it is there
      delete ts.levelSizes;
      const C = info.sizes ? info.sizes.length : 0;
      if (info.sizes && (C === ts.maxLevel || C === ts.maxLevel + 1)) {
        ts.levelSizes = info.sizes.slice().sort((a, b) => a.width - b.width);
        if (C === ts.maxLevel) ts.levelSizes.push({width: info.width, height: info.height});
      }
    }
    for (let level = ts.minLevel; level <= ts.maxLevel; level++) {
      const n = ts.getNumTiles(level);
      for (let x = 0; x < n.x; x++) for (let y = 0; y < n.y; y++)
        (out[rule] = out[rule] || []).push(ts.getTileUrl(level, x, y));
    }
  }
}
console.log(JSON.stringify(out));
"""
MIRADOR_RULE = (
    "(C===u.maxLevel||C===u.maxLevel+1)&&(this.levelSizes=this.sizes.slice().sort("
    "(O,D)=>O.width-D.width),C===u.maxLevel&&this.levelSizes.push("
)


def test_openseadragon_and_miradors_tile_urls_of_long_thin_and_wide_images_exist(
    tmp_path: Path,
) -> None:
    """OpenSeadragon 6.1.1's own ``IIIFTileSource`` run in node on each exported info.json, and
    again with the ``levelSizes`` rule of the OpenSeadragon bundled in Mirador 4.0.0 (checked
    to be the one in that bundle): every URL either builds is a file of the export, for images
    long and thin each way and one wider than ``iiif.max_width``."""
    node = need_tool("node")
    viewers = ROOT / ".viewers"
    osd = viewers / "openseadragon@6.1.1" / "build" / "openseadragon" / "openseadragon.min.js"
    mirador = (viewers / "mirador@4.0.0" / "dist" / "mirador.min.js").read_text()
    assert MIRADOR_RULE in mirador
    images = tmp_path / "images"
    images.mkdir()
    shapes = {"wide": (10000, 150), "tall": (150, 10000), "over": (13000, 300)}
    for name, size in shapes.items():
        Image.new("RGB", size, (40, 90, 160)).save(images / f"{name}.png")
    config = _config(tmp_path, images)  # iiif.max_width: 12000, its default
    out = tmp_path / "out"
    done = _export(config, "--identifier", *shapes, "--to", str(out), *BASE)
    assert done.returncode == 0, done.stderr
    infos = sorted(str(p) for p in (out / "iiif").glob("[23]/*/info.json"))
    assert len(infos) == 6
    script = tmp_path / "urls.js"
    script.write_text(OSD_URLS)
    found = subprocess.run(
        [node, str(script), str(osd), *infos], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, found.stderr
    urls = json.loads(found.stdout)
    missing = []
    for rule in ("6.1", "mirador"):
        assert len(urls[rule]) > 50, rule
        for url in urls[rule]:
            path = out / unquote(url.removeprefix(BASE[1] + "/"))
            if not path.is_file():
                missing.append((rule, url))
    assert missing == []


def test_an_image_whose_pixels_fail_is_not_published(tmp_path: Path) -> None:
    """A master cut short (its header read, its pixels not): one line for the image (how many
    files were not made, the first error), exit 1; no info.json of it in either version, and
    neither index.html nor the collection lists it or its object, whose line names that image
    (not the image of its first canvases, shown twice); the other image and object are
    exported."""
    images = tmp_path / "images"
    _sources(images)
    whole = (images / "big.png").read_bytes()
    (images / "cut.png").write_bytes(whole[: len(whole) // 3])
    rows = "broken,quad,Broken\nbroken,quad,Broken\nbroken,cut,Broken\n"
    config = _config(tmp_path, images, rows=rows)
    out = tmp_path / "out"
    done = _export(config, "--object", "quads", "broken", "--to", str(out), *BASE)
    assert done.returncode == 1, done.stderr
    about = [line for line in done.stderr.splitlines() if "identifier 'cut'" in line]
    assert len(about) == 1 and "not exported" in about[0], done.stderr
    assert "files not made" in about[0] and "decoded" in about[0], about
    assert "refused object 'broken': its image 'cut' was not exported" in done.stderr
    for version in ("3", "2"):
        assert not (out / "iiif" / version / "cut" / "info.json").exists()
        assert (out / "iiif" / version / "quad" / "info.json").is_file()
        assert not (out / "iiif" / "presentation" / version / "broken").exists()
    index = (out / "index.html").read_text()
    assert "cut" not in index and "quad</code>" in index
    collection = (out / "iiif" / "presentation" / "3" / "collection" / "catalogue").read_text()
    assert "/broken/" not in collection and "/quads/" in collection


def _hold_lock(folder: Path) -> subprocess.Popen[str]:
    """Another process holding the folder's export lock, as a run does, until stopped."""
    holder = (
        "import fcntl, os, sys, time\n"
        f"os.makedirs({str(folder / '.iiif-export')!r}, exist_ok=True)\n"
        f"f = open({str(folder / '.iiif-export' / 'lock')!r}, 'w')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(str(os.getpid()) + '\\n'); f.flush()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_one_run_at_a_time_and_no_sweeping_of_a_live_runs_files(tmp_path: Path) -> None:
    """While another run holds the folder's lock, a run says which pid holds it and exits 2,
    and the temporary files of the live run are left alone, its mark notwithstanding."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    first = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert first.returncode == 0, first.stderr
    live = out / "iiif" / "3" / "quad" / ".export-999999.info.json.part"
    live.write_bytes(b"being written")
    (out / ".export-running").write_text("999999\n")
    holder = _hold_lock(out)
    try:
        second = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
        assert second.returncode == 2, second.stderr
        assert f"pid {holder.pid}" in second.stderr, second.stderr
        assert live.read_bytes() == b"being written"
    finally:
        holder.kill()
        holder.wait()
    third = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert third.returncode == 0, third.stderr
    assert not live.exists()  # the dead run's, swept under the lock


def test_a_folder_of_another_base_is_refused_before_any_facts_are_read(tmp_path: Path) -> None:
    """The folder's base URL is checked first: with the upstream gone, the run with another
    ``--base-url`` is refused (exit 2) for the folder alone, no image asked for."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    done = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert done.returncode == 0, done.stderr
    dead = f'gone: {{type: http, url: "http://127.0.0.1:{free_port()}/{{id}}.png"}}'
    config = _config(tmp_path, images, dead)
    other = _export(config, "--all", "--to", str(out), "--base-url", "https://other.example")
    assert other.returncode == 2, other.stderr
    assert ".iiif-export.json" in other.stderr
    assert "refused" not in other.stderr, other.stderr


def test_rendered_images_are_not_kept_in_the_shared_cache(tmp_path: Path) -> None:
    """An export configured with the disk tier a server would share: the folder gains the
    sources' facts (cached as usual) and no rendered image."""
    images = tmp_path / "images"
    _sources(images)
    cache = tmp_path / "cache"
    config = _config(tmp_path, images, extra=f'cache: {{disk: "{cache}"}}')
    done = _export(config, "--identifier", "quad", "big", "--to", str(tmp_path / "out"), *BASE)
    assert done.returncode == 0, done.stderr
    entries = [p for p in cache.rglob("*") if p.is_file() and p.parent != cache]
    assert sorted({p.name for p in entries}) == ["facts"], entries


def _master_fetches(
    tmp_path: Path, cache: int, server: str = ""
) -> tuple[int, int, subprocess.CompletedProcess[str]]:
    """``big`` (1100 x 700 PNG: 3.1 MB decoded, at Pillow's 4 bytes a pixel, for every scale
    factor: a PNG has no reduced decoding) exported through an upstream that counts the
    requests for each path, with ``cache.decoded_bytes: cache``: the requests for the master
    of a dry run (its facts alone) and of a real run, and the real run."""
    images = tmp_path / "images"
    _sources(images)
    upstream = start_faulty(images, tmp_path)
    try:
        url = f"http://127.0.0.1:{upstream.port}/ok/{{id}}.png"
        backend = f'counted: {{type: http, url: "{url}"}}'
        extra = f"cache: {{decoded_bytes: {cache}}}"
        config = _config(tmp_path, images, backend, extra=extra, server=server)

        def fetches(*args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
            assert upstream.get("/_reset").status == 200
            done = _export(config, "--identifier", "big", *args, *BASE)
            assert done.returncode == 0, done.stderr
            stats = json.loads(upstream.get("/_stats").body)
            return int(stats["paths"].get("/ok/big.png", 0)), done

        facts, _ = fetches("--to", str(tmp_path / "dry"), "--dry-run")
        made, done = fetches("--to", str(tmp_path / "out"))
    finally:
        upstream.stop()
    assert len(_jpegs(tmp_path / "out")) > 20  # tiles at 4 scale factors, sizes, aliases
    return facts, made, done


def test_a_master_over_half_the_decoded_cache_is_decoded_once_per_run(tmp_path: Path) -> None:
    """``cache.decoded_bytes`` of 4 MiB keeps nothing over 2 MiB, so a server decodes this
    3.1 MB master again for each tile; the export sizes the cache for its own run (a quarter
    of ``server.memory_budget``, one line says so) and reads the master once to decode it for
    all its files, besides what reading its facts takes (as a dry run reads them)."""
    facts, made, done = _master_fetches(tmp_path, 4 << 20)
    assert facts >= 1
    assert made == facts + 1, (facts, made, done.stderr)
    said = [line for line in done.stderr.splitlines() if "decoded-source cache" in line]
    assert len(said) == 1, done.stderr
    assert "a quarter of server.memory_budget" in said[0], said
    assert "cache.decoded_bytes (4194304)" in said[0], said


def test_a_master_over_the_exports_decoded_cache_is_named_with_the_way_out(
    tmp_path: Path,
) -> None:
    """With ``server.memory_budget`` at its least (16 MiB: the export's decoded cache is 4 MiB
    at most), the 3.1 MB master is still more than half of it: one line names the image,
    says each of its tiles decodes the master again (the upstream sees that) and what
    ``cache.decoded_bytes`` keeps it, which it then does."""
    facts, made, done = _master_fetches(tmp_path, 1 << 20, ", memory_budget: 16777216")
    assert made > facts + 4, (facts, made)
    said = [line for line in done.stderr.splitlines() if "'big'" in line]
    assert len(said) == 1, done.stderr
    assert "decodes it again" in said[0], said
    way_out = re.search(r"set cache\.decoded_bytes: (\d+)", said[0])
    assert way_out is not None, said
    assert int(way_out[1]) >= 2 * 4 * 1100 * 700  # keeps it: twice Pillow's RGB decoded
    again = tmp_path / "again"
    facts, made, done = _master_fetches(again, int(way_out[1]), ", memory_budget: 16777216")
    assert made == facts + 1, (facts, made, done.stderr)
    assert "'big'" not in done.stderr, done.stderr


def test_a_symbolic_link_inside_the_folder_is_never_written_through(tmp_path: Path) -> None:
    """An image's folder that is a link to elsewhere: that image fails with a line naming the
    link, nothing is written where it points; the folder itself may be a link."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    real, outside = tmp_path / "real", tmp_path / "outside"
    (real / "iiif" / "3").mkdir(parents=True)
    outside.mkdir()
    (real / "iiif" / "3" / "quad").symlink_to(outside)
    (tmp_path / "out").symlink_to(real)
    done = _export(config, "--identifier", "quad", "big", "--to", str(tmp_path / "out"), *BASE)
    assert done.returncode == 1, done.stderr
    assert "iiif/3/quad is a symbolic link" in done.stderr, done.stderr
    assert list(outside.iterdir()) == []
    assert (real / "iiif" / "3" / "big" / "info.json").is_file()


def test_names_one_on_case_insensitive_targets_are_refused(tmp_path: Path) -> None:
    """``Quad`` after ``quad`` (in one run, or already in the folder), and the NFD spelling of
    an NFC name: refused with a line naming the other."""
    images = tmp_path / "images"
    _sources(images)
    Image.new("RGB", (40, 30), (9, 9, 9)).save(images / "Quad.png")
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    for name in (nfc, nfd):
        Image.new("RGB", (40, 30), (9, 9, 9)).save(images / f"{name}.png")
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    done = _export(config, "--identifier", "quad", "Quad", nfc, nfd, "--to", str(out), *BASE)
    assert done.returncode == 1, done.stderr
    refused = [line for line in done.stderr.splitlines() if "refused identifier" in line]
    assert len(refused) == 2, done.stderr
    assert "'Quad'" in refused[0] and "'quad'" in refused[0]
    # the two spellings look the same as written: both are shown escaped
    assert ascii(nfd) in refused[1] and ascii(nfc) in refused[1], refused
    assert not (out / "iiif" / "3" / "Quad").exists()
    later = _export(config, "--identifier", "Quad", "--to", str(out), *BASE)
    assert later.returncode == 1 and "'quad'" in later.stderr, later.stderr


def test_each_file_is_on_the_disk_before_its_name(tmp_path: Path) -> None:
    """The system calls of a run (strace): every rename of a temporary file into place follows
    an fsync of it in the same thread, and a stamp's rename is followed by an fsync (its
    folder's), so a power cut leaves no file with a name and without its bytes."""
    strace = need_tool("strace")
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    trace = tmp_path / "trace.log"
    command = [strace, "-f", "-qq", "-e", "trace=fsync,rename,renameat,renameat2", "-o",
               str(trace), sys.executable, "-m", "iiif_shim", "export", "--config", str(config),
               "--identifier", "quad", "--to", str(tmp_path / "out"), *BASE]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    synced: dict[str, bool] = {}
    renames = stamps = 0
    stamp_unsynced = False
    for line in trace.read_text().splitlines():
        thread, call = line.split(None, 1)  # strace pads the pid: "8045  fsync(7)"
        if call.startswith("fsync("):
            synced[thread] = True
            stamp_unsynced = False
        elif call.startswith("rename") and ".part" in call:
            assert synced.get(thread), line
            synced[thread] = False
            renames += 1
            if re.search(r'"[0-9a-f]{32}\.json"', call):
                stamps += 1
                stamp_unsynced = True
    assert renames > 10 and stamps == 1
    assert not stamp_unsynced


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("https://u:secretpw@static.example.org", "must not hold user:password@"),
        ("http://:8080", "with a host"),
        ("http://user@/", "with a host"),
        ("https://static.example.org/a b", "must not hold spaces, quotes"),
        ('https://static.example.org/"><script>', "must not hold spaces, quotes"),
        ("https://static.example.org/?", "must not have a query or fragment"),
        ("https://static.example.org:port", "its port is not a number"),
    ],
)
def test_a_bad_base_url_is_refused_before_anything_is_read(
    tmp_path: Path, base_url: str, problem: str
) -> None:
    """``--base-url`` is checked by the rule of ``server.public_url``: exit 2, one line, the
    folder not made, the configuration not even read, a password not echoed."""
    out = tmp_path / "out"
    done = _export(tmp_path / "missing.yaml", "--all", "--to", str(out), "--base-url", base_url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and problem in lines[0], done.stderr
    assert "server.public_url" in lines[0] and "secretpw" not in lines[0], lines
    assert not out.exists()
    config = tmp_path / "settings.yaml"
    config.write_text(f"server: {{public_url: '{base_url}'}}\n")
    check = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 1 and "server.public_url" in check.stderr, check.stderr


def test_the_exports_log_lines_are_those_of_the_one_logging_setup(tmp_path: Path) -> None:
    """At ``--log-level debug`` the export's log lines have the shape serve's have (time,
    level, logger), from the CLI's one logging setup."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    done = _export(config, "--identifier", "quad", "--to", str(tmp_path / "out"), *BASE,
                   "--log-level", "debug")  # fmt: skip
    assert done.returncode == 0, done.stderr
    logged = [line for line in done.stderr.splitlines() if " DEBUG " in line]
    assert logged, done.stderr
    shape = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG [\w.]+: ")
    assert all(shape.match(line) for line in logged), logged[:5]


def test_a_streamed_original_is_written_off_the_event_loop(tmp_path: Path) -> None:
    """A JPEG master of more than 2 megapixels from an http backend passes through as a
    stream (its 3.0 ``full/max``): every folder made and every temporary file opened for it is
    made in a worker thread, never in the thread of the event loop (strace)."""
    strace = need_tool("strace")
    images = tmp_path / "images"
    _sources(images)
    _quadrants((2048, 1100)).save(images / "large.jpg", quality=90)
    upstream = start_faulty(images, tmp_path)
    try:
        url = f"http://127.0.0.1:{upstream.port}/ok/{{id}}.jpg"
        config = _config(tmp_path, images, f'web: {{type: http, url: "{url}"}}')
        trace = tmp_path / "trace.log"
        out = tmp_path / "out"
        command = [strace, "-f", "-qq", "-e", "trace=mkdir,mkdirat,openat", "-o", str(trace),
                   sys.executable, "-m", "iiif_shim", "export", "--config", str(config),
                   "--identifier", "large", "--api", "3", "--to", str(out), *BASE]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        upstream.stop()
    assert done.returncode == 0, done.stderr
    original = out / "iiif" / "3" / "large" / "full" / "max" / "0" / "default.jpg"
    assert original.read_bytes() == (images / "large.jpg").read_bytes()  # passed through
    lines = trace.read_text().splitlines()
    loop = lines[0].split(None, 1)[0]  # the first thread: the one that runs the event loop
    made = [line for line in lines if "mkdir" in line or ('.part"' in line and "O_EXCL" in line)]
    assert any('"max"' in line for line in made), made  # the original's folder made
    on_loop = [line for line in made if line.split(None, 1)[0] == loop]
    assert on_loop == [], "\n".join(on_loop)


def test_a_refused_name_reserves_nothing_and_the_last_line_counts_it(tmp_path: Path) -> None:
    """After ``--identifier Quad``, object ``Obj`` (image ``quad``: one file with ``Quad`` on
    case-insensitive targets) is refused with its image; object ``obj`` (image ``big``) is
    exported: the refused ``Obj`` holds no name. The last line counts the 2 refused names and
    the exit status is 1."""
    images = tmp_path / "images"
    _sources(images)
    Image.new("RGB", (40, 30), (9, 9, 9)).save(images / "Quad.png")
    config = _config(tmp_path, images, rows="Obj,quad,Upper\nobj,big,Lower\n")
    out = tmp_path / "out"
    first = _export(config, "--identifier", "Quad", "--to", str(out), *BASE)
    assert first.returncode == 0, first.stderr
    done = _export(config, "--object", "Obj", "obj", "--jobs", "1", "--to", str(out), *BASE)
    assert (out / "iiif" / "presentation" / "3" / "obj" / "manifest").is_file(), done.stderr
    assert not (out / "iiif" / "presentation" / "3" / "Obj").exists()
    assert done.returncode == 1, done.stderr
    refused = [line for line in done.stderr.splitlines() if "refused " in line]
    assert len(refused) == 2, done.stderr
    assert refused[0].startswith("export: refused identifier 'quad': differs from 'Quad'")
    assert refused[1] == "export: refused object 'Obj': its image 'quad' is refused", refused
    assert ", 0 failed, 2 refused, into " in done.stdout, done.stdout


def test_a_stuck_facts_read_is_reported_for_its_image_never_a_hang(tmp_path: Path) -> None:
    """An upstream that never answers, with a backend timeout longer than any run: the image's
    facts and the object's are given ``server.request_timeout`` (2 s here), each is refused
    with a line saying so, and the run ends (exit 1)."""
    images = tmp_path / "images"
    _sources(images)
    upstream = start_faulty(images, tmp_path)
    try:
        url = f"http://127.0.0.1:{upstream.port}/stall/{{id}}.png"
        backend = f'stuck: {{type: http, url: "{url}", timeout: 3600}}'
        config = _config(tmp_path, images, backend, server=", request_timeout: 2")
        runs = [
            _export(config, *selection, "--to", str(tmp_path / "out"), *BASE, timeout=120)
            for selection in (("--identifier", "quad"), ("--object", "pages"))
        ]
    finally:
        upstream.stop()
    late = "not read within server.request_timeout (2s)"
    expected = [f"refused identifier 'quad': its facts {late}",
                f"refused object 'pages': its images' facts {late}"]  # fmt: skip
    for done, line in zip(runs, expected, strict=True):
        assert done.returncode == 1, done.stderr
        assert line in done.stderr, done.stderr
        assert ", 1 refused, into " in done.stdout, done.stdout


def test_a_stream_cancelled_while_its_temporary_file_is_made_leaves_no_file_or_descriptor(
    tmp_path: Path,
) -> None:
    """SIGINT or ``server.request_timeout`` may cancel a streamed write while its temporary
    file is being created in a thread (a slow disk): the thread still creates it, and the
    write, once cancelled, has closed and removed it (no ``.part`` file, no descriptor)."""
    tree = files.Tree(tmp_path / "out")
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    real = tree.open_temp

    def slow(rel: str) -> files.Temp:  # a disk slow to create the file
        entered.set()
        assert release.wait(30)
        try:
            return real(rel)
        finally:
            finished.set()

    tree.open_temp = slow  # type: ignore[method-assign]

    async def body() -> AsyncIterator[bytes]:
        yield b"rest"

    async def main() -> None:
        for i in range(5):
            for event in (entered, release, finished):
                event.clear()
            task = asyncio.ensure_future(tree.write_stream(f"a/b/f{i}.jpg", b"head", body()))
            assert await asyncio.to_thread(entered.wait, 30)
            task.cancel()
            await asyncio.sleep(0)  # the cancellation delivered while the thread still works
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(finished.wait, 30)  # the thread's file is made

    descriptors = len(os.listdir("/proc/self/fd"))
    try:
        asyncio.run(main())
        parts = [p.name for p in (tmp_path / "out").rglob("*.part")]
        assert parts == []
        assert len(os.listdir("/proc/self/fd")) == descriptors
    finally:
        tree.close()


def test_temporary_files_are_swept_by_the_next_run_without_a_mark(tmp_path: Path) -> None:
    """A run interrupted by SIGINT removes its mark (``.export-running``); a temporary file it
    left anyway is removed by the next run, which holds the lock."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = tmp_path / "out"
    first = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert first.returncode == 0, first.stderr
    left = out / "iiif" / "3" / "quad" / "full" / ".export-999999.default.jpg.part"
    left.write_bytes(b"half a file")
    assert not (out / ".export-running").exists()
    second = _export(config, "--identifier", "quad", "--to", str(out), *BASE)
    assert second.returncode == 0, second.stderr
    assert not left.exists()
    assert "removed 1 temporary files" in second.stderr, second.stderr


def test_repeated_identifier_and_object_options_add_up(tmp_path: Path) -> None:
    """``--identifier a --identifier b`` exports both, as ``--identifier a b`` does (and the
    same for ``--object``)."""
    images = tmp_path / "images"
    _sources(images)
    config = _config(tmp_path, images)
    out = str(tmp_path / "out")
    for option, values, images_expected in (
        ("--identifier", ("quad", "big"), 2),
        ("--object", ("quads", "pages"), 4),
    ):
        together = _export(config, option, *values, "--to", out, *BASE, "--dry-run")
        apart = _export(config, option, values[0], option, values[1], "--to", out, *BASE,
                        "--dry-run")  # fmt: skip
        assert together.returncode == 0 and apart.returncode == 0, apart.stderr
        assert f"({images_expected} images" in together.stdout, together.stdout
        assert apart.stdout == together.stdout


def test_images_of_a_restricted_route_are_never_copied(tmp_path: Path) -> None:
    """A static copy cannot check a login: an image whose route has an access policy is
    refused (neither tier is written), and so is every object showing it. Without the policy
    the same run copies it: the refusal is what keeps it out."""
    images = tmp_path / "images"
    _sources(images)
    auth = """
        auth:
          secret: "0123456789abcdef0123456789abcdef-export-test"
          policies:
            staff:
              kind: login
              label: Staff
              users: {htpasswd: users.htpasswd}
              degraded: {max_size: 100}
        """
    (tmp_path / "users.htpasswd").write_text("demo:$2y$10$" + "a" * 53 + "\n")
    config = _config(tmp_path, images, extra=auth)
    open_copy = tmp_path / "open"
    done = _export(config, "--all", "--to", str(open_copy), "--base-url", "http://x.org")
    assert done.returncode == 0, done.stderr
    assert any("page 1" in str(p) for p in open_copy.rglob("info.json"))
    restricted = config.read_text().replace(
        "routes:\n", 'routes:\n  - {match: "^dir/", backend: local, access: staff}\n', 1
    )
    config.write_text(restricted)
    out = tmp_path / "out"
    done = _export(config, "--all", "--to", str(out), "--base-url", "http://x.org")
    assert done.returncode == 1, done.stderr
    assert "refused identifier 'dir/page 1': restricted by the access policy 'staff'" in done.stderr
    assert "refused object 'pages'" in done.stderr
    assert not [p for p in out.rglob("*") if "page 1" in str(p) or "pages" in p.name]
    assert (out / "iiif" / "3" / "quad" / "info.json").is_file()  # the others are copied
