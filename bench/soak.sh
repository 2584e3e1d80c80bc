#!/usr/bin/env bash
# The soak run (on demand, not part of the tests): sets up the shim and the servers the tests
# use, then runs bench/soak.py, which writes docs/reliability.md. Arguments go to soak.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh test
exec .venv/bin/python bench/soak.py "$@"
