#!/bin/sh
# The node installer image's entry point (/usr/bin/cove-node-installer; static busybox is the only
# thing in the image besides cove's payload in /opt/cove). It runs in a privileged container with the
# node's root at $COVE_HOST_ROOT (default /host):
#   cove-node-installer daemon [cove install args]   install and label, then wait for SIGTERM (the DaemonSet)
#   cove-node-installer install [cove install args]  install, label the node
#   cove-node-installer uninstall [cove uninstall args]  unlabel the node, uninstall (the preStop hook)
# How: a private tmpfs on a fresh directory of the node's /run, in this container's mount namespace
# only (the node sees an empty directory, removed on the way out), gets the payload and the service
# account's directory bind-mounted; then the installer (tools/node-installer/main.ts) runs chrooted
# into the node's root with the payload's Node. So `cove install` writes the node's paths and finds
# the node's containerd, as it does when an operator runs it there.
set -eu
host=${COVE_HOST_ROOT:-/host}
payload=/opt/cove
sa=/var/run/secrets/kubernetes.io/serviceaccount
ready=/run/cove-node-installer.installed

say() { echo "cove-node-installer: $*"; }

# $1: the staging directory as the node sees it. Undoes what stage() did, whatever it got to.
unstage() {
  umount "$host$1/sa" 2>/dev/null || true
  umount "$host$1/payload" 2>/dev/null || true
  umount "$host$1" 2>/dev/null || true
  rmdir "$host$1" 2>/dev/null || true
}

# Runs the installer with "$@" chrooted into the node; returns its exit code.
installer() {
  d=$(mktemp -d "$host/run/cove-node-installer.XXXXXX")
  s=${d#"$host"}
  rc=0
  {
    mount -t tmpfs -o mode=0700,size=64k cove-node-installer "$d" &&
      mkdir "$d/payload" "$d/sa" &&
      mount --bind "$payload" "$d/payload" &&
      mount -o remount,bind,ro "$d/payload" &&
      if [ -d "$sa" ]; then mount --bind "$sa" "$d/sa"; fi &&
      COVE_SA_DIR=$s/sa chroot "$host" "$s/payload/bin/node" "$s/payload/node-installer.cjs" "$@"
  } || rc=$?
  unstage "$s"
  return $rc
}

if [ ! -d "$host/run" ]; then
  say "the node's root is not mounted at $host (COVE_HOST_ROOT)"
  exit 1
fi

verb=${1:-}
case "$verb" in
  install | uninstall)
    installer "$@"
    ;;
  daemon)
    shift
    installer install "$@"
    : >"$ready"
    say "installed; waiting (the preStop hook runs: cove-node-installer uninstall)"
    # PID 1 ignores signals it has no handler for: without this trap, SIGTERM would do nothing and
    # the pod would take its whole grace period to die. With hostPID the sleep would outlive us.
    trap 'say "stopping"; kill "$sleeper" 2>/dev/null; exit 0' TERM INT
    while :; do
      sleep 3600 &
      sleeper=$!
      wait "$sleeper" || true
    done
    ;;
  *)
    say "usage: cove-node-installer daemon|install|uninstall [cove install/uninstall arguments]"
    exit 2
    ;;
esac
