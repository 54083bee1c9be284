#!/usr/bin/env bash
# Installs what cove needs at run time on a Debian 12 machine (run as root): system packages, the
# pinned Node (scripts/install-node.sh, also on a machine with no Node at all), the npm dependencies
# and native addon, and the guest kernel + image (cached by content hash). What only the tests need
# is scripts/test-setup.sh's job (`npm test` runs it). Used by the README's quickstart and by CI
# (.ci/run). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # fetching the pinned Node from the npm registry
  curl ca-certificates
  # containerd and the OCI runtimes (host side for comparison; crun/runc also go into the guest image)
  containerd runc crun containernetworking-plugins iptables
  # hypervisor and guest tooling
  qemu-system-x86 erofs-utils e2fsprogs
  # building the guest's crun from Debian's source (src/guest/crun.ts)
  libseccomp-dev libcap-dev gperf
  # guest kernel sources and build dependencies
  linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev cpio lz4 xz-utils kmod
  # native addon
  python3 make g++
  # what the shim calls (pod networking, namespaces, process control)
  iproute2 util-linux procps
)
bash scripts/apt-install.sh "${PACKAGES[@]}"

bash scripts/install-node.sh
# The pinned Node first for the rest of this script, whatever this shell's PATH finds.
PATH="$(bash scripts/install-node.sh --prefix)/bin:$PATH"
export PATH

echo "==> npm ci (dependencies + native addon)"
npm ci --no-audit --no-fund --loglevel=error

echo "==> guest kernel and image (cached)"
npm run --silent guest
