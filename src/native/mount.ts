// Typed wrappers for the PID-1 syscalls in mount.c (used by the guest agent).
import { fn } from "./load.ts";

/** mount(2) flags (linux/mount.h). */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  REMOUNT: 0x20,
  NOATIME: 0x400,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
} as const;

/** umount2(2) flags. */
export const MNT = { FORCE: 1, DETACH: 2, EXPIRE: 4 } as const;

/** reboot(2) commands (linux/reboot.h). */
export const RB = {
  RESTART: 0x01234567,
  HALT: 0xcdef0123,
  POWER_OFF: 0x4321fedc,
} as const;

export interface ChildExit {
  pid: number;
  /** Set when the child exited normally. */
  exitCode: number | null;
  /** Set when a signal killed the child. */
  signal: number | null;
}

export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data?: string | null,
): void {
  fn<(s: string | null, t: string, f: string | null, fl: number, d: string | null) => void>("mount")(
    source,
    target,
    fstype,
    flags,
    data ?? null,
  );
}

export function umount2(target: string, flags = 0): void {
  fn<(t: string, f: number) => void>("umount2")(target, flags);
}

/** Syncs, then reboots/powers off; returns only by throwing. */
export function reboot(cmd: (typeof RB)[keyof typeof RB]): void {
  fn<(c: number) => void>("reboot")(cmd);
}

export function sethostname(name: string): void {
  fn<(n: string) => void>("sethostname")(name);
}

/** waitpid(pid, WNOHANG) for exactly one pid: null while it runs; throws ECHILD if it is not our child. */
export function waitpidNoHang(pid: number): ChildExit | null {
  return fn<(p: number) => ChildExit | null>("waitpidNoHang")(pid);
}
