#!/usr/bin/env bash
# Installs everything cove needs on a Debian 12 machine (run as root): system packages, the npm
# dependencies and native addon, and the guest kernel + image (cached by content hash).
# Used by the README's quickstart and by CI (.ci/run). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # containerd and the OCI runtimes (host side for comparison; crun/runc also go into the guest image)
  containerd runc crun containernetworking-plugins iptables
  # hypervisor and guest tooling
  qemu-system-x86 erofs-utils e2fsprogs busybox-static
  # building the guest's crun from Debian's source (src/guest/crun.ts)
  libseccomp-dev libcap-dev gperf
  # guest kernel sources and build dependencies
  linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev cpio lz4 xz-utils kmod
  # native addon
  python3 make g++
  # what the tests and tools call
  iproute2 util-linux procps socat tmux
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "==> npm ci (dependencies + native addon)"
npm ci --no-audit --no-fund --loglevel=error

echo "==> guest kernel and image (cached)"
npm run --silent guest

echo "==> nested test host kernel (cached; only the tests of the embedded VMM on PVM hosts use it)"
node --import tsx tools/nested/kernel.ts
