// The filesystems a Linux PID 1 must mount before anything else runs. The root filesystem is the
// read-only guest image, so every writable place is a tmpfs.
import { existsSync, mkdirSync, readFileSync, symlinkSync } from "node:fs";
import { errorMessage } from "../../../src/common/errors.ts";
import { MS, mount } from "../../../src/native/mount.ts";

export interface MountSpec {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  data?: string;
  /** Create the mount point first (it lives on a filesystem mounted earlier, e.g. /dev). */
  mkdir?: boolean;
}

const HARDEN = MS.NOSUID | MS.NODEV | MS.NOEXEC;

/** In order: each target exists on the image or on a filesystem mounted before it. */
export const PID1_MOUNTS: readonly MountSpec[] = [
  { source: "proc", target: "/proc", fstype: "proc", flags: HARDEN },
  { source: "sysfs", target: "/sys", fstype: "sysfs", flags: HARDEN },
  // CONFIG_DEVTMPFS_MOUNT usually mounted it already when the kernel mounted the root.
  { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: MS.NOSUID, data: "mode=0755" },
  {
    source: "devpts",
    target: "/dev/pts",
    fstype: "devpts",
    flags: MS.NOSUID | MS.NOEXEC,
    data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    mkdir: true,
  },
  { source: "shm", target: "/dev/shm", fstype: "tmpfs", flags: MS.NOSUID | MS.NODEV, data: "mode=1777", mkdir: true },
  { source: "tmpfs", target: "/run", fstype: "tmpfs", flags: MS.NOSUID | MS.NODEV, data: "mode=0755" },
  { source: "tmpfs", target: "/tmp", fstype: "tmpfs", flags: MS.NOSUID | MS.NODEV, data: "mode=1777" },
  { source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", flags: HARDEN | MS.RELATIME, data: "nsdelegate" },
];

/** Symlinks programs expect in /dev that devtmpfs does not create. */
export const DEV_LINKS: readonly [string, string][] = [
  ["/dev/fd", "/proc/self/fd"],
  ["/dev/stdin", "/proc/self/fd/0"],
  ["/dev/stdout", "/proc/self/fd/1"],
  ["/dev/stderr", "/proc/self/fd/2"],
];

/** Mount points in /proc/self/mountinfo (field 5), with octal escapes (\040 for space) decoded. */
export function mountedTargets(mountinfo: string): Set<string> {
  const out = new Set<string>();
  for (const line of mountinfo.split("\n")) {
    const target = line.split(" ")[4];
    if (target) out.add(target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))));
  }
  return out;
}

/** Mount points of this process now (empty before /proc is mounted). */
export function currentMounts(): Set<string> {
  try {
    return mountedTargets(readFileSync("/proc/self/mountinfo", "utf8"));
  } catch {
    return new Set(); // /proc not mounted yet
  }
}

/** Mounts everything in PID1_MOUNTS that is not mounted yet; returns what it mounted. Throws on failure. */
export function mountEssentials(specs: readonly MountSpec[] = PID1_MOUNTS): string[] {
  const done: string[] = [];
  for (const m of specs) {
    if (currentMounts().has(m.target)) continue;
    if (m.mkdir) mkdirSync(m.target, { recursive: true, mode: 0o755 });
    try {
      mount(m.source, m.target, m.fstype, m.flags, m.data ?? null);
    } catch (e) {
      throw new Error(`mounting ${m.fstype} on ${m.target}: ${errorMessage(e)}`);
    }
    done.push(m.target);
  }
  for (const [link, target] of DEV_LINKS) if (!existsSync(link)) symlinkSync(target, link);
  return done;
}
