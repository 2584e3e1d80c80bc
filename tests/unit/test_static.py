"""Lint, format, type and import checks are part of the suite: ruff (lint and format) on
everything, mypy --strict on the package, and the package's floors (the import contract in
pyproject.toml, and no import cycle at all, TYPE_CHECKING imports and imports inside functions
included). Each import check is first shown to catch what it is for, on a copy of the package
with one bad import added."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_ruff() -> None:
    done = run("ruff", "check", "iiif_shim", "tests", "bench", "docs")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = run("ruff", "format", "--check", "iiif_shim", "tests", "bench", "docs")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict() -> None:
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def cycles(root: Path) -> list[list[str]]:
    """Every import cycle of the package under ``root`` (``tests/import_cycles.py``)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "import_cycles.py")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    found: list[list[str]] = json.loads(done.stdout)
    return found


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package (and its contract) that a test may spoil."""
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(
        ROOT / "iiif_shim", root / "iiif_shim", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_import_contract_holds() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") >= 6


def test_there_is_no_import_cycle() -> None:
    assert cycles(ROOT) == []


TYPING = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    "


def _spoiled(copy: Path, module: str, line: str) -> tuple[Path, str]:
    """``module`` of the copy with ``line`` added after its future import; its text before."""
    path = copy / "iiif_shim" / module
    original = path.read_text()
    head = "from __future__ import annotations\n"
    path.write_text(original.replace(head, f"{head}\n{line}  # noqa\n", 1))
    return path, original


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a lower floor reaching up, even only for typing
        ("base/errors.py", TYPING + "from iiif_shim.web.app import create_app", "Floors"),
        # the pure spec taking an image library (through another module)
        ("iiif/profile.py", "from iiif_shim.imaging import pillow", "iiif/ is the spec alone"),
        # the settings loading an implementation
        ("config/settings.py", "import iiif_shim.backends.registry", "config/ assembles"),
    ],
    ids=["upward", "impure-spec", "config-loads-backends"],
)
def test_the_contract_catches_what_it_is_for(
    copy: Path, module: str, line: str, broken: str
) -> None:
    path, original = _spoiled(copy, module, line)
    try:
        done = lint_imports(copy)
        assert done.returncode == 1, done.stdout
        assert broken in done.stdout.split("Broken contracts")[-1], done.stdout
    finally:
        path.write_text(original)


def test_a_cycle_through_a_type_checking_import_is_found(copy: Path) -> None:
    facts, facts_text = _spoiled(
        copy, "model/facts.py", TYPING + "from iiif_shim.model import plan"
    )
    plan, plan_text = _spoiled(copy, "model/plan.py", "from iiif_shim.model import facts")
    try:
        assert ["iiif_shim.model.facts", "iiif_shim.model.plan"] in cycles(copy)
    finally:
        facts.write_text(facts_text)
        plan.write_text(plan_text)
