#!/usr/bin/env bash
# Set up and run iiif-shim. Without arguments: the embedded default (bundled config and sample
# images) on http://127.0.0.1:8182/. Arguments go to `iiif-shim serve` (--config, --host, --port).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh serve
exec .venv/bin/iiif-shim serve "$@"
