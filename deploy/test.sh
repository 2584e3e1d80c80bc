#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh test
exec .venv/bin/python -m pytest "$@"
