// KVM when it is backed by hardware virtualization; TCG otherwise (no /dev/kvm, or PVM-backed
// KVM, which cannot run a stock Linux guest: see docs/hosts.md).
import { existsSync, readFileSync } from "node:fs";

export interface AccelChoice {
  accel: "kvm" | "tcg";
  reason: string;
}

export function chooseAccel(
  probe: { kvm: boolean; cpuinfo: string } = {
    kvm: existsSync("/dev/kvm"),
    cpuinfo: existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "",
  },
): AccelChoice {
  if (!probe.kvm) return { accel: "tcg", reason: "/dev/kvm is absent" };
  const flags = /^flags\s*:\s*(.*)$/m.exec(probe.cpuinfo)?.[1]?.split(/\s+/) ?? [];
  if (flags.includes("vmx") || flags.includes("svm"))
    return { accel: "kvm", reason: "hardware virtualization (vmx/svm)" };
  return { accel: "tcg", reason: "/dev/kvm has no vmx/svm behind it (PVM or similar): using TCG" };
}
