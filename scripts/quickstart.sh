#!/usr/bin/env bash
# The README's first command: set up a fresh Debian 12 machine and run a container in a cove
# microVM through containerd. Run as root from the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The pinned Node, whatever PATH finds first (cove install also copies the Node running it).
PATH="$(bash scripts/install-node.sh --prefix)/bin:$PATH"
export PATH
echo "==> cove install (/opt/cove; cove and the shim on PATH; /etc/cove/cove.toml; containerd's config)"
bin/cove install --force   # this checkout's build replaces any earlier links
echo "==> cove check"
bin/cove check || true
echo "==> ctr run --runtime io.containerd.cove.v2 (a busybox image built locally)"
bash scripts/apt-install.sh busybox-static   # the demo's image is Debian's static busybox
node --import tsx tools/demo.ts
