// The qemu backend's pure parts: the accelerator choice from /dev/kvm + cpuinfo, and QEMU's argv.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hwVirtFlag } from "../../../src/hypervisor/host.ts";
import { chooseAccel } from "../../../src/hypervisor/qemu/accel.ts";
import { qemuArgs } from "../../../src/hypervisor/qemu/args.ts";

const cpuinfo = (flags: string) =>
  `processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: ${flags}\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: ${flags}\n`;

const host = (kvm: boolean, cpuinfo: string) => ({ kvm, hwVirt: hwVirtFlag(cpuinfo), pvm: false });

describe("chooseAccel", () => {
  it("uses KVM when /dev/kvm is backed by vmx or svm", () => {
    assert.equal(chooseAccel(host(true, cpuinfo("fpu vme de pse vmx ept"))).accel, "kvm");
    assert.equal(chooseAccel(host(true, cpuinfo("fpu svm npt lahf_lm"))).accel, "kvm");
  });

  it("uses TCG on a PVM host: /dev/kvm present but no vmx/svm in the guest-visible flags", () => {
    // A PVM guest kernel exposes /dev/kvm (kvm-pvm) while cpuinfo shows a VM without vmx.
    const c = chooseAccel(host(true, cpuinfo("fpu vme de pse tsc msr hypervisor lahf_lm")));
    assert.equal(c.accel, "tcg");
    assert.match(c.reason, /PVM/);
  });

  it("uses TCG without /dev/kvm, whatever the CPU flags say", () => {
    const c = chooseAccel(host(false, cpuinfo("vmx")));
    assert.equal(c.accel, "tcg");
    assert.match(c.reason, /absent/);
  });

  it("does not take a flag name inside another word, or outside the flags line, for vmx", () => {
    assert.equal(chooseAccel(host(true, cpuinfo("fpu vmxnotreally svmx"))).accel, "tcg");
    assert.equal(chooseAccel(host(true, "model name\t: vmx svm marketing name\nflags\t\t: fpu sse2\n")).accel, "tcg");
    assert.equal(chooseAccel(host(true, "")).accel, "tcg");
  });
});

describe("qemuArgs", () => {
  const base = {
    kernel: "/k/bzImage",
    cmdline: "console=ttyS0 root=/dev/vda",
    memoryMiB: 512,
    vcpus: 2,
    blkSockets: ["/w/blk0.sock", "/w/blk1.sock"],
    vsockSocket: "/w/vsock.sock",
  };
  /** The value after each occurrence of `flag`. */
  const values = (a: string[], flag: string) => a.flatMap((x, i) => (x === flag ? [a[i + 1]!] : []));

  it("builds a microvm with shared memfd RAM, modern virtio-mmio and our vhost-user devices", () => {
    const a = qemuArgs({ ...base, accel: "tcg" });
    assert.deepEqual(values(a, "-accel"), ["tcg"]);
    assert.deepEqual(values(a, "-m"), ["512M"]);
    assert.deepEqual(values(a, "-smp"), ["2"]);
    assert.deepEqual(values(a, "-kernel"), ["/k/bzImage"]);
    assert.deepEqual(values(a, "-append"), ["console=ttyS0 root=/dev/vda"]);
    assert.ok(a.includes("-nodefaults") && a.includes("-no-reboot"));
    assert.deepEqual(values(a, "-serial"), ["stdio"]);
    // vhost-user needs the RAM in a shareable fd, and the machine must use that backend.
    assert.deepEqual(values(a, "-object"), ["memory-backend-memfd,id=mem,size=512M,share=on"]);
    assert.match(values(a, "-M")[0]!, /^microvm,.*memory-backend=mem/);
    assert.deepEqual(values(a, "-global"), ["virtio-mmio.force-legacy=false"]);
    assert.equal(a.includes("-cpu"), false, "no -cpu host under TCG");
    assert.deepEqual(values(a, "-chardev"), [
      "socket,id=blk0,path=/w/blk0.sock",
      "socket,id=blk1,path=/w/blk1.sock",
      "socket,id=vsock,path=/w/vsock.sock",
    ]);
    assert.deepEqual(values(a, "-device"), [
      "vhost-user-blk,chardev=blk0,num-queues=1",
      "vhost-user-blk,chardev=blk1,num-queues=1",
      "vhost-user-vsock-device,chardev=vsock",
    ]);
    // Disk order is the guest's /dev/vdX order: blk devices come before vsock, in the given order.
    assert.ok(a.indexOf("socket,id=blk0,path=/w/blk0.sock") < a.indexOf("socket,id=blk1,path=/w/blk1.sock"));
  });

  it("caps TCG's translation cache when asked; never under KVM", () => {
    assert.deepEqual(values(qemuArgs({ ...base, accel: "tcg", tcgTbSizeMib: 32 }), "-accel"), ["tcg,tb-size=32"]);
    assert.deepEqual(values(qemuArgs({ ...base, accel: "tcg", tcgTbSizeMib: 0 }), "-accel"), ["tcg"]);
    assert.deepEqual(values(qemuArgs({ ...base, accel: "kvm", tcgTbSizeMib: 32 }), "-accel"), ["kvm"]);
  });

  it("passes the host CPU through under KVM", () => {
    const a = qemuArgs({ ...base, accel: "kvm", blkSockets: [] });
    assert.deepEqual(values(a, "-accel"), ["kvm"]);
    assert.deepEqual(values(a, "-cpu"), ["host"]);
    assert.deepEqual(values(a, "-device"), ["vhost-user-vsock-device,chardev=vsock"]);
  });

  it("keeps each argument whole (spaces in the command line are not split)", () => {
    const a = qemuArgs({ ...base, accel: "tcg", cmdline: "a=1 b=2  c" });
    assert.equal(a[a.indexOf("-append") + 1], "a=1 b=2  c");
  });

  it("adds one vhost-user virtio-net device per NIC, in order, with the NIC's MAC and MTU", () => {
    const a = qemuArgs({
      ...base,
      accel: "tcg",
      nets: [
        { socket: "/w/net0.sock", mac: "0A:58:0A:E7:07:02", mtu: 1500 },
        { socket: "/w/net1.sock", mac: "02:00:00:00:00:01", mtu: 0 },
      ],
    });
    assert.deepEqual(values(a, "-netdev"), ["vhost-user,id=n0,chardev=net0", "vhost-user,id=n1,chardev=net1"]);
    assert.deepEqual(
      values(a, "-device").filter((d) => d.startsWith("virtio-net")),
      [
        "virtio-net-device,netdev=n0,mac=0a:58:0a:e7:07:02,host_mtu=1500",
        // MTU 0: not offered (the guest keeps its default).
        "virtio-net-device,netdev=n1,mac=02:00:00:00:00:01",
      ],
    );
    assert.ok(values(a, "-chardev").includes("socket,id=net1,path=/w/net1.sock"));
    // Disks stay first (their order is the guest's /dev/vdX order).
    assert.ok(a.indexOf("socket,id=blk1,path=/w/blk1.sock") < a.indexOf("socket,id=net0,path=/w/net0.sock"));
  });

  it("refuses a MAC or MTU that could smuggle QEMU options", () => {
    const n = (mac: string, mtu: number) => ({ ...base, accel: "tcg" as const, nets: [{ socket: "/s", mac, mtu }] });
    assert.throws(() => qemuArgs(n("0a:58:0a:e7:07:02,romfile=/x", 1500)), /invalid MAC/);
    assert.throws(() => qemuArgs(n("0a:58:0a:e7:07", 1500)), /invalid MAC/);
    assert.throws(() => qemuArgs(n("0a:58:0a:e7:07:02", 1.5)), /invalid MTU/);
    assert.throws(() => qemuArgs(n("0a:58:0a:e7:07:02", 70000)), /invalid MTU/);
  });

  it("has no net device without NICs", () => {
    const a = qemuArgs({ ...base, accel: "tcg" });
    assert.equal(a.includes("-netdev"), false);
  });
});
