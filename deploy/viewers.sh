#!/usr/bin/env bash
# Install the browser builds of the built-in IIIF viewers that the shim serves at /viewers/.
#   bash deploy/viewers.sh            into ./.viewers at the repository root (the default
#                                     `viewers.assets` of the shim)
#   bash deploy/viewers.sh FOLDER     into FOLDER
#
# Each package is fetched with `npm pack NAME@VERSION` (no npm install, no build step), its
# tarball is checked against the sha512 pinned below, and only its browser build and licence
# files are copied to FOLDER/NAME@VERSION/, the layout npm CDNs use, so `viewers.base_url` may
# point at a mirror of FOLDER or at such a CDN. Tarballs stay in a temporary folder, never in
# FOLDER. A package whose pinned version is already in place (its stamp file matches) is
# skipped; other versions of it are removed. npm comes from apt-get when it is missing.
#
# Keep this table in step with PACKAGES in iiif_shim/presentation/viewers.py (a unit test compares them).
#
# npm package            version  sha512 of the npm tarball
PINNED=(
  "mirador               4.0.0    b96b04f5eda8a9273f954bbebd5c031a14ecc9cba11ac7d9d8a7d7e822df5e24f7c201b2eaa4fdfaae4cdd5f59cfbda191d220b09ba029eb1aa30991b589afac"
  "universalviewer       4.4.0    f4e56ceae0b3790630e748e0f24daf106aba85016eee412ff4e380966a951fd76e86ba60d71948a9c3086f6ae13509c0c5341ddd1d778312737bd518922c1dce"
  "openseadragon         6.1.1    83888a7b6abc07ae3649a053dfec78645dfff1bd53c4f3f27728e6b6b38b803ae561630a77d65733ed426ffc5af435724a4becffb97a1d1d671ca7c3e45dd3b3"
  "leaflet               1.9.4    9f14b5ca7cc93a63a51e9fa22f71725aa2bcf46b4d2fc53caef94c3ac41d4d3b2cc59c025e1f0dd8d07718340e2fe611dd79d6c99031c108b15116fe140ef83c"
  "leaflet-iiif          3.0.0    5967a3a27faf59a2543dee0ba7f022758328b32cbcd9b53f3a35601d00935288c559a531cecd34028ea949de36118c38e52f125b60eb73856c31bdecc5235431"
  "@samvera/clover-iiif  3.3.8    976f06a192bba83e34d8b5d6fc9a59cbd157df78605f4245351a5c751e83261c2eb3a9b85914fd48e3dd312c130d6fb0df78566c8c91336c16709e03d78d4994"
)

# What each package serves: paths inside its tarball (folders are copied whole).
served_paths() {
  case "$1" in
    mirador) echo "dist/mirador.min.js" ;;
    universalviewer) echo "dist/umd dist/uv.css" ;;
    openseadragon) echo "build/openseadragon/openseadragon.min.js build/openseadragon/images" ;;
    leaflet) echo "dist/leaflet.js dist/leaflet.css dist/images" ;;
    leaflet-iiif) echo "leaflet-iiif.js" ;;
    @samvera/clover-iiif) echo "dist/web-components/index.umd.js" ;;
    *) echo "viewers: no served paths for $1" >&2; return 1 ;;
  esac
}

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=${1:-.viewers}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

if ! command -v npm >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "viewers: apt-get install npm"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm \
    >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for row in "${PINNED[@]}"; do
  read -r name version sha512 <<<"$row"
  target="$dest/$name@$version"
  stamp="$target/.installed"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$name@$version $sha512" ]; then
    continue
  fi
  echo "viewers: $name@$version"
  pack="$work/pack"
  rm -rf "$pack" "$work/package"
  mkdir -p "$pack"
  # --ignore-scripts: nothing from the package runs; the tarball is only read
  tarball=$(cd "$pack" && npm pack --silent --ignore-scripts "$name@$version" | tail -n 1)
  if ! echo "$sha512  $pack/$tarball" | sha512sum --check --quiet --status; then
    echo "viewers: $name@$version: the tarball's sha512 is not the pinned one; refusing it" >&2
    exit 1
  fi
  tar -xzf "$pack/$tarball" -C "$work" --no-same-owner --no-same-permissions
  partial="$target.partial"
  rm -rf "$partial"
  mkdir -p "$partial"
  for path in $(served_paths "$name"); do
    if [ ! -e "$work/package/$path" ]; then
      echo "viewers: $name@$version has no $path" >&2
      exit 1
    fi
    mkdir -p "$partial/$(dirname "$path")"
    cp -R "$work/package/$path" "$partial/$path"
  done
  # licence and package description next to the files they cover
  for file in "$work"/package/LICEN[CS]E* "$work"/package/COPYING* "$work"/package/package.json; do
    [ -f "$file" ] && cp "$file" "$partial/"
  done
  # only regular files are served: drop any link a package might carry
  find "$partial" -type l -delete
  # precompressed copies, sent to browsers that accept gzip
  find "$partial" -type f \( -name '*.js' -o -name '*.css' -o -name '*.svg' \) -size +1k \
    -exec gzip -9 -n -k -f {} \;
  rm -rf "$target"
  mv "$partial" "$target"
  echo "$name@$version $sha512" > "$stamp"
  # other versions of this package are no longer referenced
  for old in "$dest/$name"@*; do
    [ "$old" = "$target" ] || rm -rf "$old"
  done
done
