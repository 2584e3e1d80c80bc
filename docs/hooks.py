"""MkDocs hooks: the pages the site makes when it is built, so none of them can drift.

- ``reference.md``: the configuration reference, rendered from the settings classes
  (:func:`iiif_shim.config.reference.reference`);
- ``index.md``: the README, with its links into ``docs/`` made relative to the site;
- ``changelog.md``: ``CHANGELOG.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from iiif_shim.config.reference import reference


def _relinked(text: str) -> str:
    """Links written from the repository's root, made relative to the site's pages."""
    return text.replace("](docs/", "](").replace("](CHANGELOG.md)", "](changelog.md)")


def _front_page(root: Path) -> str:
    text = _relinked((root / "README.md").read_text(encoding="utf-8"))
    return re.sub(
        r"^\| Configuration reference \|",
        "| [Configuration reference](reference.md) |",
        text,
        flags=re.M,
    )


def on_files(files: Files, config: Any) -> Files:
    root = Path(config.config_file_path).parent
    for name, content in (
        ("reference.md", reference()),
        ("index.md", _front_page(root)),
        ("changelog.md", _relinked((root / "CHANGELOG.md").read_text(encoding="utf-8"))),
    ):
        files.append(File.generated(config, name, content=content))
    return files
