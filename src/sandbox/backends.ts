// The hypervisor backends this build of cove carries, registered with the backend chooser.
import { EmbeddedHypervisor } from "../hypervisor/embedded/embedded.ts";
import { QemuHypervisor } from "../hypervisor/qemu/qemu.ts";
import { registerBackend } from "./backend.ts";

export function registerBuiltinBackends(): void {
  registerBackend(
    "qemu",
    (config, choice) =>
      new QemuHypervisor(
        { accel: choice.accel, reason: choice.reason },
        { binary: config.qemu.binary, tcgTbSizeMib: config.qemu.tcgTbSizeMib },
      ),
  );
  registerBackend("embedded", () => new EmbeddedHypervisor());
}
