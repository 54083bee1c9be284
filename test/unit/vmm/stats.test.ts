// KVM binary stats parsing against a synthetic stats file laid out as Documentation/virt/kvm/api.rst
// describes (header, id string, descriptors with names, data), and on the real /dev/kvm if present.
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Kvm } from "../../../src/vmm/kvm.ts";
import { kvmStats, readStats } from "../../../src/vmm/stats.ts";

test("readStats parses header, descriptors and data", () => {
  const nameSize = 48;
  const names = ["exits", "io_exits", "mmio_exits"];
  const header = Buffer.alloc(24);
  const idOff = 24;
  const descOff = idOff + nameSize;
  const descLen = 16 + nameSize;
  const dataOff = descOff + names.length * descLen;
  header.writeUInt32LE(nameSize, 4);
  header.writeUInt32LE(names.length, 8);
  header.writeUInt32LE(idOff, 12);
  header.writeUInt32LE(descOff, 16);
  header.writeUInt32LE(dataOff, 20);
  const id = Buffer.alloc(nameSize);
  id.write("kvm-1234/vcpu_0");
  const descs = Buffer.alloc(names.length * descLen);
  names.forEach((n, i) => {
    const o = i * descLen;
    descs.writeUInt16LE(1, o + 6); // size: one u64
    descs.writeUInt32LE(i * 8, o + 8); // offset in data
    descs.write(n, o + 16);
  });
  const data = Buffer.alloc(names.length * 8);
  data.writeBigUInt64LE(100n, 0);
  data.writeBigUInt64LE(7n, 8);
  data.writeBigUInt64LE(42n, 16);
  const dir = mkdtempSync(join(tmpdir(), "cove-stats-"));
  try {
    const f = join(dir, "stats");
    writeFileSync(f, Buffer.concat([header, id, descs, data]));
    const fd = openSync(f, "r");
    try {
      const s = readStats(fd);
      assert.equal(s.get("exits"), 100n);
      assert.equal(s.get("io_exits"), 7n);
      assert.equal(s.get("mmio_exits"), 42n);
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a real vCPU's stats have an exits counter", { skip: existsSync("/dev/kvm") ? false : "no /dev/kvm" }, () => {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  try {
    const vcpu = vm.createVcpu(0);
    const s = kvmStats(vcpu.fd);
    assert.equal(typeof s.get("exits"), "bigint");
    assert.ok(kvmStats(vm.fd).size > 0);
  } finally {
    vm.close();
    kvm.close();
  }
});
