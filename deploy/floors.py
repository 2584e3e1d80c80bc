"""Print the declared minimum version of every core dependency (``project.dependencies`` in
pyproject.toml) as pip constraints, ``name==version``: ``deploy/setup.sh test`` installs the
floors venv with them, and ``deploy/test.sh`` runs the unit suite there too, so every floor
declared is one the code was tested on."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
for requirement in dependencies:
    found = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][A-Za-z0-9.]*)", requirement)
    if found is None:
        sys.exit(f"deploy/floors.py: {requirement!r} declares no minimum version (name>=x.y)")
    print(f"{found.group(1)}=={found.group(2)}")
