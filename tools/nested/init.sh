#!/bin/sh
# PID 1 of the nested test host (test/harness/nested.ts). The root is this machine's own root
# over virtio-9p, read-only; /mnt is the writable share holding cmd.sh. Runs cmd.sh, records its
# output and exit code on the share, then makes QEMU exit (reboot=t + -no-reboot).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/tmp 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none coveshare /mnt
# The checkout, at its own path: it may live under /tmp, which the tmpfs above hides.
if [ -s /mnt/repo-path ]; then
  repo=$(cat /mnt/repo-path)
  mkdir -p "$repo" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro coverepo "$repo" ||
    echo "cove-nested: could not mount the checkout at $repo" > /dev/console
fi
ip link set lo up 2>/dev/null
echo "cove-nested: up $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
cd /
# Output goes to tmpfs first: small synchronous writes straight to the 9p share cost a round trip
# to QEMU each under TCG (minutes for a chatty command).
# A watchdog for hangs: when the command prints nothing for 60 s, the console (which the test
# harness reports on failure) gets the output's last lines and where each Node thread sleeps.
(
  last=-1
  while sleep 60; do
    size=$(wc -c < /tmp/.cove-nested-output 2>/dev/null || echo 0)
    if [ "$size" = "$last" ]; then
      echo "cove-nested: no output for 60 s at $(cut -d' ' -f1 /proc/uptime)s; last lines:"
      tail -n 8 /tmp/.cove-nested-output
      for p in /proc/[0-9]*; do
        case "$(readlink $p/exe 2>/dev/null)" in */node) ;; *) continue ;; esac
        for t in $p/task/[0-9]*; do
          echo "  ${p#/proc/}/${t##*/} $(cat $t/comm 2>/dev/null) $(cat $t/wchan 2>/dev/null) $(cut -d' ' -f3 $t/stat 2>/dev/null)"
        done
      done
    fi > /dev/console 2>&1
    last=$size
  done
) &
watchdog=$!
HOME=/tmp sh /mnt/cmd.sh > /tmp/.cove-nested-output 2>&1 < /dev/null
status=$?
kill $watchdog 2>/dev/null
cp /tmp/.cove-nested-output /mnt/output
echo $status > /mnt/status
sync
echo "cove-nested: done $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
busybox reboot -f 2>/dev/null || reboot -f
