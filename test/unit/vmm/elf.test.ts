import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { guestArtifacts } from "../../../src/guest/paths.ts";
import { BootError } from "../../../src/vmm/boot/bzimage.ts";
import { isElf, parseElfKernel } from "../../../src/vmm/boot/elf.ts";

interface Seg {
  type?: number;
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

/** A minimal ELF64 x86-64 executable: header, program headers at 64, data after. */
function elf(segs: Seg[], entry: number, size = 0x3000, patch?: (v: DataView) => void): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true);
  v.setUint16(18, 62, true);
  v.setBigUint64(24, BigInt(entry), true);
  v.setBigUint64(32, 64n, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, segs.length, true);
  segs.forEach((s, i) => {
    const o = 64 + i * 56;
    v.setUint32(o, s.type ?? 1, true);
    v.setBigUint64(o + 8, BigInt(s.offset), true);
    v.setBigUint64(o + 16, BigInt(s.paddr) | 0xffffffff80000000n, true);
    v.setBigUint64(o + 24, BigInt(s.paddr), true);
    v.setBigUint64(o + 32, BigInt(s.filesz), true);
    v.setBigUint64(o + 40, BigInt(s.memsz), true);
  });
  for (let i = 0x1000; i < size; i++) b[i] = i & 0xff;
  patch?.(v);
  return b;
}

const MB16 = 0x1000000;
const ok: Seg[] = [
  { offset: 0x1000, paddr: MB16, filesz: 0x1000, memsz: 0x1000 },
  { offset: 0x2000, paddr: MB16 + 0x1000, filesz: 0x800, memsz: 0x4000 },
  { type: 4, offset: 0, paddr: 0, filesz: 0, memsz: 0 }, // a PT_NOTE: skipped
];

describe("vmlinux (ELF) loader", () => {
  test("loads PT_LOAD segments at their physical addresses, entry inside one, synthetic setup header", () => {
    const k = parseElfKernel(elf(ok, MB16));
    assert.equal(k.entry, MB16);
    assert.deepEqual(
      k.segments.map((s) => [s.paddr, s.data.length, s.memsz, s.data[0]]),
      [
        [MB16, 0x1000, 0x1000, 0x00],
        [MB16 + 0x1000, 0x800, 0x4000, 0x00],
      ],
    );
    assert.equal(k.end, MB16 + 0x5000);
    const h = new DataView(k.setupHeader.buffer);
    assert.equal(h.getUint16(0x1fe - 0x1f1, true), 0xaa55);
    assert.equal(h.getUint32(0x202 - 0x1f1, true), 0x53726448);
    assert.equal(k.cmdlineSize, 2047);
  });

  test("refuses malformed or hostile headers with a BootError", () => {
    const bad: [string, Uint8Array][] = [
      ["not ELF", new Uint8Array(100)],
      ["32-bit", elf(ok, MB16, 0x3000, (v) => v.setUint8(4, 1))],
      ["not EXEC", elf(ok, MB16, 0x3000, (v) => v.setUint16(16, 3, true))],
      ["not x86-64", elf(ok, MB16, 0x3000, (v) => v.setUint16(18, 183, true))],
      ["phentsize", elf(ok, MB16, 0x3000, (v) => v.setUint16(54, 32, true))],
      ["phnum 0", elf([], MB16)],
      ["phoff past the end", elf(ok, MB16, 0x3000, (v) => v.setBigUint64(32, 0xfffffn, true))],
      ["phoff 2^63", elf(ok, MB16, 0x3000, (v) => v.setBigUint64(32, 1n << 63n, true))],
      ["segment past the file", elf([{ offset: 0x2000, paddr: MB16, filesz: 0x2000, memsz: 0x2000 }], MB16)],
      ["filesz > memsz", elf([{ offset: 0x1000, paddr: MB16, filesz: 0x1000, memsz: 0x10 }], MB16)],
      ["above the limit", elf([{ offset: 0x1000, paddr: 0xfffff000, filesz: 0x1000, memsz: 0x2000 }], 0xfffff000)],
      [
        "overlap",
        elf(
          [
            { offset: 0x1000, paddr: MB16, filesz: 0x1000, memsz: 0x1000 },
            { offset: 0x1000, paddr: MB16 + 0x800, filesz: 0x100, memsz: 0x100 },
          ],
          MB16,
        ),
      ],
      ["entry outside", elf(ok, 0x100000)],
      ["no PT_LOAD", elf([{ type: 4, offset: 0, paddr: MB16, filesz: 0, memsz: 0x10 }], MB16)],
    ];
    for (const [what, img] of bad) assert.throws(() => parseElfKernel(img), BootError, what);
    assert.equal(isElf(new Uint8Array([0x7f, 0x45])), false);
  });

  test("the guest build's vmlinux parses: entry at startup_64 (16 MiB), segments from 16 MiB", (t) => {
    const path = guestArtifacts().vmlinux;
    if (!existsSync(path)) {
      t.skip(`no guest vmlinux at ${path} (npm run guest)`);
      return;
    }
    const k = parseElfKernel(readFileSync(path));
    assert.equal(k.entry, MB16);
    assert.ok(k.segments.every((s) => s.paddr >= MB16));
    assert.ok(k.end > MB16 && k.end < 256 * 1024 * 1024, `ends at ${k.end.toString(16)}`);
  });
});
