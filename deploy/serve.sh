#!/usr/bin/env bash
# Set up and run iiif-shim. Without arguments: the embedded default (bundled config and sample
# images) on http://127.0.0.1:8182/. Arguments go to `iiif-shim serve` (--config, --host, --port);
# a relative --config path is read from the folder this is run in.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/deploy/setup.sh" serve
exec "$root/.venv/bin/iiif-shim" serve "$@"
