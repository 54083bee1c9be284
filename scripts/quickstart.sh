#!/usr/bin/env bash
# The README's first command: set up a fresh Debian 12 machine and run a container in a cove
# microVM through containerd. Run as root from the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> cove install (/opt/cove; cove and the shim on PATH; /etc/cove/cove.toml; containerd's config)"
bin/cove install --force   # this checkout's build replaces any earlier links
echo "==> cove check"
bin/cove check || true
echo "==> ctr run --runtime io.containerd.cove.v2 (a busybox image built locally)"
node --import tsx scripts/demo.ts
