#!/usr/bin/env bash
# Set up everything the tests need, then run the whole test suite, then the unit suite again on
# the declared minimum versions of the core dependencies (./.venv-floors). Arguments go to
# pytest (and then only that run is made).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh test
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
echo "the unit suite on the floors: $(tr '\n' ' ' < .venv-floors/constraints.txt)"
exec .venv-floors/bin/python -m pytest tests/unit -q
