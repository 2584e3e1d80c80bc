"""The documentation: the site builds strictly, the generated configuration reference covers
every key the code reads, and the README stays a short front page with a working quick start."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import iiif_shim
from iiif_shim.config import reference as ref
from iiif_shim.config import settings as config_settings
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
    assert [key for key, _, _ in ref.SECTIONS] == sorted(
        config_settings._SECTIONS, key=[k for k, _, _ in ref.SECTIONS].index
    )
    assert set(config_settings._SECTIONS) == {key for key, _, _ in ref.SECTIONS}


def test_the_reference_documents_every_key_of_every_settings_class() -> None:
    classes = _settings_classes()
    assert len(classes) > 20  # the discovery itself works
    tables = list(_reference_rows().values())
    for cls in classes:
        keys = {f.name for f in dataclasses.fields(cls) if "doc" in f.metadata}
        # the class's own keys sit together in one table; inherited shared ones may be apart
        own = {name for name in keys if name in vars(cls).get("__annotations__", {})}
        assert any(own <= table for table in tables), f"{cls.__qualname__}: {sorted(own)}"
        for f in dataclasses.fields(cls):
            if "doc" in f.metadata:
                doc = " ".join(str(f.metadata["doc"]).split())
                assert doc, f"{cls.__qualname__}.{f.name} has no doc"
                assert f"| `{f.name}` |" in ref.reference()


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
