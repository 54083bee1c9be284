// A PodSource (src/metrics/pod.ts) over a running pod VM: its devices are cove's own, in this
// process, on both backends; the embedded VMM adds its vCPUs' exit counters and guest RAM mapped
// here; the qemu backend has guest RAM in QEMU's process and vhost-user servers here.
import { DeviceVm } from "../hypervisor/device-vm.ts";
import { EmbeddedVm } from "../hypervisor/embedded/embedded.ts";
import { QemuVm } from "../hypervisor/qemu/qemu.ts";
import type { RunningVm } from "../hypervisor/types.ts";
import { qemuGuestRam, withinRanges } from "../vmm/accounting.ts";
import { exitTotals } from "./exits.ts";
import type { DeviceCounters, PodInfo, PodSource } from "./pod.ts";
import { CachedSampler, guestRamTouchedBytes, type MemorySample, pssBytes } from "./proc-memory.ts";

const NO_DEVICES: DeviceCounters = { blk: [], net: [], vhostUser: [] };

export function podSource(info: PodInfo, vm: RunningVm, containers: () => number): PodSource {
  /** Set once the VM is gone: its KVM stats fds are closed then. */
  let gone = false;
  void vm.wait().then(() => {
    gone = true;
  });
  const ramBytes = info.memoryMib * 1024 * 1024;
  const memory = new CachedSampler<MemorySample>(async () => {
    if (vm instanceof EmbeddedVm) {
      const [guestTouchedBytes, shimPssBytes] = await Promise.all([
        guestRamTouchedBytes(process.pid, withinRanges(vm.machine.ramHostRanges)),
        pssBytes(process.pid),
      ]);
      return { guestTouchedBytes, shimPssBytes };
    }
    const [guestTouchedBytes, vmmPssBytes, shimPssBytes] = await Promise.all([
      vm.pid > 0 ? guestRamTouchedBytes(vm.pid, qemuGuestRam(ramBytes)) : undefined,
      vm.pid > 0 ? pssBytes(vm.pid) : undefined,
      pssBytes(process.pid),
    ]);
    return { guestTouchedBytes, vmmPssBytes, shimPssBytes };
  });
  return {
    info,
    containers,
    memory: () => (gone ? Promise.resolve({}) : memory.get()),
    devices() {
      if (!(vm instanceof DeviceVm)) return NO_DEVICES;
      const d = vm.devices;
      return {
        blk: [...d.disks].map(([id, dev]) => ({ id, m: dev.metrics })),
        net: [...d.nets].map(([id, dev]) => ({ id, m: dev.metrics })),
        vsock: { m: d.vsock.metrics, connections: d.vsock.connectionCount },
        vhostUser:
          vm instanceof QemuVm
            ? [...vm.backends].map(([id, b]) => ({ id, kicks: b.metrics.kicks, calls: b.metrics.calls }))
            : [],
      };
    },
    exits() {
      if (!(vm instanceof EmbeddedVm) || gone) return undefined;
      const m = vm.machine;
      const stats = m.vcpuStats.map((s) => {
        try {
          return s?.read();
        } catch {
          return undefined; // the VM is going away
        }
      });
      return exitTotals(
        stats,
        m.loops.map((l) => l.exits),
      );
    },
  };
}
