// The QEMU command line for a microvm whose devices are our vhost-user backends.
import type { AccelChoice } from "./accel.ts";

export interface QemuArgsInput {
  kernel: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  accel: AccelChoice["accel"];
  /** vhost-user-blk sockets, in disk order. */
  blkSockets: string[];
  vsockSocket: string;
}

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
    i.accel,
  ];
  if (i.accel === "kvm") a.push("-cpu", "host");
  a.push("-kernel", i.kernel, "-append", i.cmdline);
  i.blkSockets.forEach((s, n) => {
    a.push("-chardev", `socket,id=blk${n},path=${s}`, "-device", `vhost-user-blk,chardev=blk${n},num-queues=1`);
  });
  a.push("-chardev", `socket,id=vsock,path=${i.vsockSocket}`, "-device", "vhost-user-vsock-device,chardev=vsock");
  return a;
}
