"""The documentation: the site builds strictly, the generated configuration reference covers
every key the code reads, and the README stays a short front page with a working quick start."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import iiif_shim
from iiif_shim.base.schema import Reader
from iiif_shim.config import reference as ref
from iiif_shim.config import settings as config_settings
from iiif_shim.presentation.sources.settings import SOURCE_SETTINGS
from iiif_shim.upstream.settings import UpstreamSettings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def _settings_classes() -> set[type]:
    """Every settings class of the package, found by importing every module (not by walking
    from the top, as the reference does): a dataclass with a field declared by ``option()``."""
    found: set[type] = set()
    for module in pkgutil.walk_packages(iiif_shim.__path__, "iiif_shim."):
        if module.name.endswith("__main__"):
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__.startswith("iiif_shim.")
                and any("doc" in f.metadata for f in dataclasses.fields(value))
            ):
                found.add(value)
    return found


def _reference_rows() -> dict[str, set[str]]:
    """The reference's rows as heading -> the keys in the tables under it."""
    rows: dict[str, set[str]] = {}
    heading = ""
    for line in ref.reference().splitlines():
        if line.startswith("#"):
            heading = line
        elif line.startswith("| `"):
            rows.setdefault(heading, set()).add(line.split("`")[1])
    return rows


def test_the_reference_has_every_top_level_section() -> None:
    assert set(config_settings._SECTIONS) == {key for key, _, _ in ref.SECTIONS}


def test_the_reference_documents_every_key_of_every_settings_class() -> None:
    classes = _settings_classes()
    assert len(classes) > 20  # the discovery itself works
    tables = list(_reference_rows().values())
    for cls in classes:
        # a class's own keys sit together in one table (those it inherits, in their declaring
        # class's table: that class is checked as well)
        own = {
            f.name
            for f in dataclasses.fields(cls)
            if "doc" in f.metadata and ref.owner(cls, f.name) is cls
        }
        assert any(own <= table for table in tables), f"{cls.__qualname__}: {sorted(own)}"
        for f in dataclasses.fields(cls):
            assert "doc" not in f.metadata or f.metadata["doc"].strip(), f"{cls}.{f.name}"


def _plain(value: Any) -> Any:
    """A default as YAML would give it back."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_every_default_shown_is_yaml_that_reads_back_as_the_default() -> None:
    for cls in _settings_classes():
        for f in dataclasses.fields(cls):
            shown = ref.default(f) if "doc" in f.metadata else "required"
            if shown in ("required", "see below"):
                continue
            written = re.fullmatch(r"`(.*)`( \(\d+ [MG]iB\))?", shown)
            assert written, (cls, f.name, shown)
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            assert yaml.safe_load(written[1]) == _plain(value), (cls, f.name, shown)


# the least each object source type that talks HTTP needs, to test the keys it takes
MINIMAL = {
    # a CSV read over HTTP: the HTTP keys are refused for a file
    "csv": {
        "path": "http://catalogue.example.org/objects.csv",
        "columns": {"object": "o", "image": "i"},
    },
    "json": {"url": "http://catalogue.example.org/items/{object}", "fields": {"images": "$.i"}},
    "contentdm": {"url": "http://cdm.example.org", "collection": "maps"},
}


@pytest.mark.parametrize("type_name", sorted(MINIMAL))
def test_the_http_keys_listed_for_an_object_source_are_the_ones_it_takes(type_name: str) -> None:
    """Each key the reference lists under the type is accepted set to another value than its
    default; each shared key it does not list is refused (never silently ignored)."""
    text = ref.reference().split(f"`type: {type_name}`")[1].split("\n#### ")[0]
    listed = set(re.findall(r"`(\w+)`", text.split("HTTP keys](#http-keys):")[1].split("\n")[0]))
    cls = SOURCE_SETTINGS[type_name]
    own = {f.name for f in dataclasses.fields(cls) if ref.owner(cls, f.name) is cls}
    for f in dataclasses.fields(UpstreamSettings):
        if f.name in own or f.name == "redirects":
            continue
        other = "some-text" if f.default is None else f.default * 2 + 1  # credentials: text
        spec = {"type": type_name, **MINIMAL[type_name], f.name: other}
        reader = Reader(Path("."))
        reader.read(cls, spec, "s")
        assert (not reader.problems) == (f.name in listed), (f.name, reader.problems)


def test_a_key_left_out_of_the_reference_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails when a section is forgotten."""
    monkeypatch.setattr(ref, "SECTIONS", tuple(s for s in ref.SECTIONS if s[0] != "cache"))
    with pytest.raises(AssertionError, match="CacheSettings"):
        test_the_reference_documents_every_key_of_every_settings_class()


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Every page, link and anchor resolves (MkDocs' strict mode), the generated pages too."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: run `bash deploy/test.sh`, which installs it")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reference = (site / "reference" / "index.html").read_text()
    assert "max_client_connections" in reference and "tile_cache_bytes" in reference
    assert "Your own collection" in (site / "index.html").read_text()


def test_the_readme_is_a_front_page() -> None:
    assert len(README.splitlines()) < 300
    for heading in ("## Quick start", "## Your own collection in five minutes", "## Documentation"):
        assert heading in README


def test_quick_start_commands_exist() -> None:
    quick = README.split("## Quick start")[1].split("\n## ")[0]
    commands = [line for line in quick.splitlines() if line.startswith("bash ")]
    assert [c.split()[1] for c in commands] == ["deploy/serve.sh", "deploy/test.sh"]
    for script in ("deploy/serve.sh", "deploy/test.sh"):
        assert (ROOT / script).exists()
    assert "deploy/test.sh" in (ROOT / ".ci" / "run").read_text()
