# What a container sees, one section per "== name" line, in a form two runtimes can be compared by.
# POSIX sh with busybox's applets (or coreutils); run as `sh -c "$(cat probe.sh)"`. Every value is
# read the same way under each runtime; differences are judged by compare.ts.
sec() { echo "== $1"; }
show() { if [ -r "$1" ]; then cat "$1"; else echo "absent"; fi; }

sec kernel; uname -r
sec boot_id; show /proc/sys/kernel/random/boot_id
sec ids; id
sec cwd; pwd
sec hostname; hostname
sec env; env | sort
sec status; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status
sec limits; tail -n +2 /proc/self/limits | sed 's/  */ /g'
sec umask; umask
# mount point, fstype, per-mount options, super options (mountinfo fields 5, 6, and after "-")
sec mounts
awk '{ for (i = 7; $i != "-"; i++); print $5, $(i + 1), $6, $(i + 3) }' /proc/self/mountinfo | sort
sec cgroup; cat /proc/self/cgroup
sec cgroup_files; ls /sys/fs/cgroup 2>/dev/null | sort
for f in memory.max memory.high memory.swap.max cpu.max cpu.weight pids.max cgroup.controllers; do
  sec "cgroup:$f"; show "/sys/fs/cgroup/$f"
done
sec cgroup_writable
if mkdir /sys/fs/cgroup/probe-child 2>/dev/null; then rmdir /sys/fs/cgroup/probe-child; echo yes; else echo no; fi
sec dev
for f in /dev/* /dev/pts/ptmx /dev/mqueue /dev/shm; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  stat -c '%n %F %a %u:%g %t:%T' "$f"
done
sec dev_shm; stat -c '%a %u:%g' /dev/shm; df -k /dev/shm | tail -n 1 | awk '{ print $2 }'
sec etc_hosts; show /etc/hosts
sec etc_resolv; show /etc/resolv.conf
sec etc_hostname; show /etc/hostname
sec nproc; nproc
sec meminfo; grep -E '^(MemTotal|SwapTotal):' /proc/meminfo
