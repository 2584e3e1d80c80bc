#!/usr/bin/env bash
# Set up iiif-shim in ./.venv (editable install) and the built-in viewers in ./.viewers.
#   bash deploy/setup.sh          what serving needs
#   bash deploy/setup.sh test     plus what the tests need: the legacy servers they run against
#                                 (apt-get: nginx, iipsrv, lighttpd, vips, chromium, poppler,
#                                 redis-server, curl, certutil, htpasswd, postgresql; Thumbor in
#                                 ./.venv-thumbor), libmagic, the test tools (pip), the
#                                 official IIIF validator in ./.venv-validator, patched for
#                                 Python 3 (see tests/validator/test_validator.py), and
#                                 ./.venv-floors: the declared minimum versions of the core
#                                 dependencies (deploy/floors.py), for the unit suite
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode=${1:-serve}
python=${PYTHON:-python3}
validator_version=1.0.5
validator_ng_version=0.1.0
thumbor_version=7.8.0

apt_packages=()
# Debian's python3 needs python3-venv for `python3 -m venv`
"$python" -c 'import ensurepip, venv' 2>/dev/null || apt_packages+=(python3-venv)
if [ "$mode" = test ]; then
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx-light)
  ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' || apt_packages+=(libmagic1)
  command -v patch >/dev/null 2>&1 || apt_packages+=(patch)
  [ -x /usr/lib/iipimage-server/iipsrv.fcgi ] || apt_packages+=(iipimage-server)
  command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || apt_packages+=(lighttpd)
  command -v vips >/dev/null 2>&1 || apt_packages+=(libvips-tools)
  # the vips engine's library (pyvips, in the test extra, loads it; Debian's build reads JPEG 2000)
  ldconfig -p 2>/dev/null | grep -q 'libvips\.so\.42' || apt_packages+=(libvips42)
  command -v pdftoppm >/dev/null 2>&1 || apt_packages+=(poppler-utils)
  command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
  # certutil: the browser tests make Chromium trust their test CA in an NSS database
  command -v certutil >/dev/null 2>&1 || apt_packages+=(libnss3-tools)
  command -v curl >/dev/null 2>&1 || apt_packages+=(curl)  # HTTP/2 to nginx (tests/http/test_deploy.py)
  command -v redis-server >/dev/null 2>&1 || apt_packages+=(redis-server)  # the Redis cache tier
  command -v htpasswd >/dev/null 2>&1 || apt_packages+=(apache2-utils)  # bcrypt htpasswd files (auth)
  # the search index's PostgreSQL engine, tested against a real server (tests/postgres.py)
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || apt_packages+=(postgresql)
  # `systemd-analyze verify` checks deploy/systemd's units; it needs no running systemd
  command -v systemd-analyze >/dev/null 2>&1 || apt_packages+=(systemd)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: apt-get install ${apt_packages[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
# pip runs only when what it installs from changed since the last successful install
stamp=".venv/.iiif-shim-setup-$mode"
wanted=$(cat pyproject.toml deploy/setup.sh deploy/floors.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  if [ "$mode" = test ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
  else
    .venv/bin/pip install -q --disable-pip-version-check -e ".[fast]"
  fi
  echo "$wanted" > "$stamp"
fi

# the built-in viewers' browser files (pinned npm packages) in ./.viewers
bash deploy/viewers.sh

if [ "$mode" = test ]; then
  # the OpenID Connect provider the login tests sign in against (tests/oidc/provider.mjs): npm
  # `oidc-provider` and its dependencies at the versions and sha512 of tests/oidc/package-lock.json,
  # in ./.oidc-provider (`npm ci`, no install scripts); again only when that lock file changed
  node_major=$(node -p 'process.versions.node.split(".").map(Number).join(" ")' 2>/dev/null || true)
  read -r major minor _ <<<"${node_major:-0 0 0}"
  if [ "$major" -lt 20 ] || { [ "$major" -eq 20 ] && [ "$minor" -lt 19 ]; } || [ "$major" -eq 21 ]; then
    echo "setup: oidc-provider 9 needs Node.js 20.19 or newer (22 LTS); found ${node_major:-none}" >&2
    exit 1
  fi
  oidc_lock=$(sha256sum tests/oidc/package-lock.json | cut -d' ' -f1)
  if [ "$(cat .oidc-provider/.installed 2>/dev/null)" != "$oidc_lock" ]; then
    echo "setup: oidc-provider (tests/oidc/package-lock.json) in .oidc-provider"
    mkdir -p .oidc-provider
    cp tests/oidc/package.json tests/oidc/package-lock.json .oidc-provider/
    (cd .oidc-provider && npm ci --silent --ignore-scripts --no-audit --no-fund)
    echo "$oidc_lock" > .oidc-provider/.installed
  fi

  # the core dependencies at their declared floors, for the unit suite (deploy/test.sh)
  [ -x .venv-floors/bin/python ] || "$python" -m venv .venv-floors
  if [ "$(cat .venv-floors/.iiif-shim-setup 2>/dev/null)" != "$wanted" ]; then
    "$python" deploy/floors.py > .venv-floors/constraints.txt
    .venv-floors/bin/pip install -q --disable-pip-version-check \
      -c .venv-floors/constraints.txt -e ".[test]"
    echo "$wanted" > .venv-floors/.iiif-shim-setup
  fi
fi

if [ "$mode" = test ]; then
  if [ ! -x .venv-validator/bin/iiif-validate.py ]; then
    "$python" -m venv .venv-validator
    .venv-validator/bin/pip install -q --disable-pip-version-check \
      "iiif-validator==$validator_version"
  fi
  if [ ! -x .venv-thumbor/bin/thumbor ]; then
    "$python" -m venv .venv-thumbor
    .venv-thumbor/bin/pip install -q --disable-pip-version-check "thumbor==$thumbor_version"
  fi
  if [ ! -x .venv-validator-ng/bin/iiif-validator ]; then
    # iiif-validator-ng needs Python 3.12+: pyenv's, else the system's python3.12/3.13
    ng_python=""
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[23]*/bin/python3 \
                     "$(command -v python3.13 || true)" "$(command -v python3.12 || true)"; do
      if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
        ng_python=$candidate
        break
      fi
    done
    if [ -z "$ng_python" ]; then
      echo "setup: iiif-validator-ng needs Python 3.12 or newer, and none was found" >&2
      exit 1
    fi
    "$ng_python" -m venv .venv-validator-ng
    .venv-validator-ng/bin/pip install -q --disable-pip-version-check \
      "iiif-validator-ng==$validator_ng_version"
  fi
  site=$(.venv-validator/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if ! grep -q 'result.fetch(url)' "$site/iiif_validator/tests/format_jp2.py"; then
    patch -d "$site" -p1 --forward --quiet < tests/validator/iiif-validator-1.0.5-py3-formats.patch
  fi
fi
