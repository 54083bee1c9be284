// QEMU's accelerator: KVM when /dev/kvm is backed by hardware virtualization, TCG otherwise (no
// /dev/kvm, or PVM-backed KVM, which cannot run a stock Linux guest: see docs/hosts.md). The same
// probe and rule as backend selection with hypervisor = "qemu".
import { type HostKvm, probeHost } from "../host.ts";
import { type Accel, chooseBackend } from "../select.ts";

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

export function chooseAccel(host: HostKvm = probeHost()): AccelChoice {
  const { accel, reason } = chooseBackend("qemu", host);
  return { accel, reason };
}
