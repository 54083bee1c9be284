// Ending the VM. PID 1 must never exit (the kernel would panic), so every way out goes through
// here: sync, then reboot(2). RESTART (not POWER_OFF) because QEMU microvm has no ACPI power-off;
// with the kernel's `reboot=t` (triple fault) and QEMU's `-no-reboot`, a restart makes QEMU exit,
// and the embedded VMM sees the reset as the VM's end.
import { RB, reboot } from "../../../src/native/mount.ts";
import type { Logger } from "../log.ts";

let ending = false;
/** Whether this process is the guest's init (false for an agent run on a host for tests, even as PID 1 of a pid namespace). */
let guestInit = process.pid === 1;

export function setGuestInit(v: boolean): void {
  guestInit = v;
}

/** Ends the VM (or, when not PID 1, the process). Never returns normally. */
export function endVm(log: Logger, reason: string, code = 0): never {
  if (!ending) {
    ending = true;
    log.info({ reason }, "cove-agent shutting down the VM");
  }
  if (guestInit) {
    try {
      reboot(RB.RESTART);
    } catch (e) {
      log.fatal({ err: e }, "reboot(2) failed");
    }
    // reboot failed: leave the kernel nothing to panic about; park forever.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  }
  process.exit(code);
}

/** Routes every way the agent could die (uncaught errors, an empty event loop) to endVm. */
export function installFatalHandlers(log: Logger): void {
  process.on("uncaughtException", (err) => {
    log.fatal({ err }, "uncaught exception");
    endVm(log, "uncaught exception", 1);
  });
  process.on("unhandledRejection", (err) => {
    log.fatal({ err }, "unhandled promise rejection");
    endVm(log, "unhandled rejection", 1);
  });
  // 'exit' handlers must be synchronous; reboot(2) is.
  process.on("exit", (code) => {
    if (guestInit) endVm(log, `process exiting with code ${code}`, code);
  });
}
