// What this host offers a VM: the one probe of /dev/kvm, the CPU's virtualization flags and PVM.
// Backend selection (select.ts), the qemu backend's accelerator and `cove check` all read it, so
// they cannot disagree. PVM hosts expose a /dev/kvm that cannot run a stock Linux guest (docs/hosts.md).
import { accessSync, constants, existsSync, readFileSync } from "node:fs";

export interface HostKvm {
  /** /dev/kvm exists and we may open it read-write. */
  kvm: boolean;
  /** vmx or svm in /proc/cpuinfo's flags, or null. */
  hwVirt: "vmx" | "svm" | null;
  /** The kvm_pvm module is loaded (KVM without hardware virtualization). */
  pvm: boolean;
}

export interface HostPaths {
  kvm: string;
  cpuinfo: string;
  pvmModule: string;
}

const DEFAULT_PATHS: HostPaths = { kvm: "/dev/kvm", cpuinfo: "/proc/cpuinfo", pvmModule: "/sys/module/kvm_pvm" };

/** vmx or svm in the first `flags` line of /proc/cpuinfo (a whole flag, nowhere else), or null. */
export function hwVirtFlag(cpuinfo: string): HostKvm["hwVirt"] {
  const flags = new Set(/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/) ?? []);
  return flags.has("vmx") ? "vmx" : flags.has("svm") ? "svm" : null;
}

export function probeHost(paths: HostPaths = DEFAULT_PATHS): HostKvm {
  let kvm = false;
  try {
    accessSync(paths.kvm, constants.R_OK | constants.W_OK);
    kvm = true;
  } catch {
    kvm = false;
  }
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync(paths.cpuinfo, "utf8");
  } catch {
    // unreadable: no flags, so no hardware virtualization
  }
  return { kvm, hwVirt: hwVirtFlag(cpuinfo), pvm: existsSync(paths.pvmModule) };
}

/** KVM with hardware virtualization: what the embedded VMM and QEMU's KVM accelerator need. */
export function hasHardwareKvm(host: HostKvm): boolean {
  return host.kvm && host.hwVirt !== null;
}

/** Why the host does or does not have hardware KVM, in words for logs, errors and `cove check`. */
export function describeHost(host: HostKvm): string {
  if (!host.kvm) return "/dev/kvm is not available (absent, or not read-write for this user)";
  if (host.hwVirt === null) {
    return `/dev/kvm is not backed by hardware virtualization (no vmx/svm in /proc/cpuinfo, as under PVM${host.pvm ? "; kvm_pvm is loaded" : ""})`;
  }
  return `/dev/kvm is backed by ${host.hwVirt}`;
}
