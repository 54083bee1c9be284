// Shared scaffolding for integration tests that boot a guest on the qemu backend: wait for the
// guest's console marker, retry a first probe until the guest answers, and the QEMU arguments
// for a vhost-user virtio-net device. Every wait is bounded by the caller's deadline.

/** Polls (every 100 ms) until `consoleText()` contains `marker`; after `deadline` (epoch ms)
 * throws `${failure}\n<last 3000 chars of the console>`. */
export async function waitForConsole(
  consoleText: () => string,
  marker: string,
  deadline: number,
  failure: string,
): Promise<void> {
  while (!consoleText().includes(marker)) {
    if (Date.now() > deadline) throw new Error(`${failure}\n${consoleText().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs `probe` until it resolves (pausing `intervalMs` after each failure); once `deadline`
 * (epoch ms) has passed, the probe's last error is thrown. */
export async function retryUntil<T>(probe: () => Promise<T>, deadline: number, intervalMs = 300): Promise<T> {
  for (;;) {
    try {
      return await probe();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}

/** QEMU arguments for a virtio-net (mmio) device served by a vhost-user backend at `socket`. */
export function vhostUserNetArgs(socket: string, mac: string, mtu: number): string[] {
  return [
    ...["-chardev", `socket,id=net0,path=${socket}`],
    ...["-netdev", "vhost-user,id=n0,chardev=net0"],
    ...["-device", `virtio-net-device,netdev=n0,mac=${mac},host_mtu=${mtu}`],
  ];
}
