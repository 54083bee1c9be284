#!/usr/bin/env bash
# What the tests need beyond the runtime (scripts/setup.sh): test tools, the nested test host's
# kernel and the containerd versions the end-to-end tests run against besides Debian 12's. `npm
# test` runs this before integration tests (scripts/test.mjs), so the README's two commands work on
# a fresh machine. Everything is cached; a second run only checks. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "!!! test-setup: not root, so nothing installed; integration tests that need root skip and say why" >&2
  exit 0
fi

PACKAGES=(
  busybox-static # test images are built from Debian's static busybox
  socat tmux     # echo servers in test guests; `ctr run -t` driven through a terminal
  mmdebstrap     # the Debian 12 root without Node in which the Node bootstrap is tested; the rootfs bench's image
  gcc libc6-dev  # the static file probe built into the fidelity test image (test/harness/probe/fsprobe.c)
  openssl        # the fake Kubernetes API server's certificate (the node installer's label tests)
)
bash scripts/apt-install.sh "${PACKAGES[@]}"

echo "==> nested test host kernel (cached; only the tests of the embedded VMM on PVM hosts use it)"
node --import tsx tools/nested/kernel.ts
# Fetched from Debian's archive into the cache, never installed; fails loudly when one cannot be fetched.
echo "==> containerd versions the end-to-end tests run against (cached)"
node --import tsx test/harness/fetch-containerd.ts all
