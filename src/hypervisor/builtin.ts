// The hypervisor backends this build of cove carries, registered with the backend selection (select.ts).
import { EmbeddedHypervisor } from "./embedded/embedded.ts";
import { QemuHypervisor } from "./qemu/qemu.ts";
import { registerBackend } from "./select.ts";

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
