#!/usr/bin/env bash
# Run the benchmarks on demand (not part of the tests): sets up the shim, the legacy servers
# (as for the tests) and, in .venv-bench, the peer server, then writes docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh test
if [ ! -x .venv-bench/bin/iiif_testserver.py ]; then
  "${PYTHON:-python3}" -m venv .venv-bench
  .venv-bench/bin/pip install -q --disable-pip-version-check "iiif==1.0.10"
fi
.venv/bin/python bench/tiles.py "$@"
.venv/bin/python bench/iip.py
exec .venv/bin/python bench/processes.py
