// The QEMU command line for a microvm whose devices are served by our vhost-user back-ends.
import type { AccelChoice } from "./accel.ts";

export interface QemuArgsInput {
  kernel: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  accel: AccelChoice["accel"];
  /** TCG's translation-cache size in MiB (`-accel tcg,tb-size=N`); 0 or absent: QEMU's own default
   * (1 GiB on 7.2, which a guest's code fills slowly but never gives back). Ignored under KVM. */
  tcgTbSizeMib?: number;
  /** vhost-user-blk sockets, in disk order. */
  blkSockets: string[];
  vsockSocket: string;
  /** vhost-user net sockets with the NIC's MAC and MTU, in NIC order. */
  nets?: { socket: string; mac: string; mtu: number }[];
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function qemuArgs(i: QemuArgsInput): string[] {
  const a = [
    "-nodefaults",
    "-no-user-config",
    "-no-reboot", // guest `reboot -f` with reboot=t ends QEMU
    "-display",
    "none",
    "-serial",
    "stdio",
    // vhost-user needs guest RAM in a shared fd, and modern (non-legacy) virtio-mmio.
    "-object",
    `memory-backend-memfd,id=mem,size=${i.memoryMiB}M,share=on`,
    "-M",
    "microvm,acpi=off,memory-backend=mem",
    "-global",
    "virtio-mmio.force-legacy=false",
    "-m",
    `${i.memoryMiB}M`,
    "-smp",
    String(i.vcpus),
    "-accel",
    i.accel === "tcg" && i.tcgTbSizeMib ? `tcg,tb-size=${i.tcgTbSizeMib}` : i.accel,
  ];
  if (i.accel === "kvm") a.push("-cpu", "host");
  a.push("-kernel", i.kernel, "-append", i.cmdline);
  i.blkSockets.forEach((s, n) => {
    a.push("-chardev", `socket,id=blk${n},path=${s}`, "-device", `vhost-user-blk,chardev=blk${n},num-queues=1`);
  });
  (i.nets ?? []).forEach((n, k) => {
    // Both go into a comma-separated option string: only a well-formed MAC and an integer MTU.
    if (!MAC_RE.test(n.mac)) throw new Error(`invalid MAC ${JSON.stringify(n.mac)}`);
    if (!Number.isInteger(n.mtu) || n.mtu < 0 || n.mtu > 65535) throw new Error(`invalid MTU ${n.mtu}`);
    const mtu = n.mtu ? `,host_mtu=${n.mtu}` : "";
    a.push(
      "-chardev",
      `socket,id=net${k},path=${n.socket}`,
      "-netdev",
      `vhost-user,id=n${k},chardev=net${k}`,
      "-device",
      `virtio-net-device,netdev=n${k},mac=${n.mac.toLowerCase()}${mtu}`,
    );
  });
  a.push("-chardev", `socket,id=vsock,path=${i.vsockSocket}`, "-device", "vhost-user-vsock-device,chardev=vsock");
  return a;
}
