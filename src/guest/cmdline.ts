// The guest kernel's command line: the one place that says which parameters a cove guest boots with.
// Both backends (QEMU, the embedded VMM) and every tool or test that boots the guest build it here.

/**
 * What every cove guest needs from its kernel, whatever the VMM: its console on COM1 and no probing
 * of the UARTs that are not there; panic=-1 + reboot=t (and QEMU's -no-reboot, or the embedded VMM's
 * triple-fault exit) so that a guest panic or reboot ends the VM at once, which the shim sees; no PCI
 * (every device is virtio-mmio).
 */
export const GUEST_BASE_PARAMS = ["console=ttyS0", "8250.nr_uarts=1", "reboot=t", "panic=-1", "pci=off"] as const;

/** The guest image: a read-only erofs on the first disk, our agent's /init as PID 1. */
export const GUEST_ROOT_PARAMS = ["root=/dev/vda", "rootfstype=erofs", "ro", "init=/init"] as const;

type Part = string | readonly string[] | false | undefined;

/**
 * Joins command-line parts (strings of space-separated parameters, or lists), dropping every
 * parameter that is already there, so a VMM that adds its own base to a caller's line never passes
 * one twice.
 */
export function kernelCmdline(...parts: Part[]): string {
  const seen = new Set<string>();
  for (const part of parts) {
    if (!part) continue;
    for (const p of typeof part === "string" ? part.split(/\s+/) : part) if (p) seen.add(p);
  }
  return [...seen].join(" ");
}

/** A hostname the guest agent can set: [A-Za-z0-9.-], at most 63 characters, never empty. */
export function guestHostname(hostname: string): string {
  return hostname.replace(/[^A-Za-z0-9.-]/g, "-").slice(0, 63) || "cove";
}

export interface GuestCmdlineOptions {
  /** cove.hostname= for the agent (made safe by guestHostname). */
  hostname?: string;
  /** `quiet`: less serial output, which is slow under TCG. */
  quiet?: boolean;
  /** More parameters, appended (e.g. printk.time=1, cove.selftest). */
  extra?: string;
}

/** The command line a cove guest boots with: base + root parameters, then the options. */
export function guestCmdline(o: GuestCmdlineOptions = {}): string {
  return kernelCmdline(
    GUEST_BASE_PARAMS,
    GUEST_ROOT_PARAMS,
    o.quiet && "quiet",
    o.hostname !== undefined && `cove.hostname=${guestHostname(o.hostname)}`,
    o.extra,
  );
}
