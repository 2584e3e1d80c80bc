#!/usr/bin/env bash
# Performance side by side with peer servers (on demand, never a pass/fail test): installs what
# it needs, then runs bench/perf.py, which writes docs/performance.md and docs/performance.png.
#
#   bash bench/perf.sh [FIGURE ...] [--quick] [--profile] [--rounds R] [--seconds S]
#
# Installs, when missing: the shim and the servers of the tests (deploy/setup.sh test: iipsrv,
# lighttpd, nginx, vips, Thumbor in .venv-thumbor), wrk, hey and redis-server (apt-get), the
# reference implementation `iiif` 1.0.10 in .venv-bench (plus py-spy with --profile), and
# iiif-processor 7.x (with sharp's prebuilt libvips) in bench/.node (npm; ignored by git).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash deploy/setup.sh test
missing=()
for tool in wrk hey redis-server node npm; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if [ ! -x .venv-bench/bin/iiif_testserver.py ]; then
  "${PYTHON:-python3}" -m venv .venv-bench
  .venv-bench/bin/pip install -q --disable-pip-version-check "iiif==1.0.10"
fi
case " $* " in
  *" --profile "*)
    [ -x .venv-bench/bin/py-spy ] || .venv-bench/bin/pip install -q --disable-pip-version-check "py-spy==0.4.*" ;;
esac
if [ ! -d bench/.node/node_modules/iiif-processor ]; then
  npm install --prefix bench/.node --no-audit --no-fund --no-save "iiif-processor@7"
fi
exec .venv/bin/python bench/perf.py "$@"
