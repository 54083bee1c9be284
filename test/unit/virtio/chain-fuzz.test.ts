// Seeded fuzz of descriptor-chain parsing: random descriptor tables and rings must either parse
// into buffers that lie inside guest memory, or be rejected as a GuestError — never anything else,
// never a hang. Set COVE_FUZZ_SEED to replay a run; COVE_FUZZ_ITERS to run longer.
import assert from "node:assert/strict";
import { it } from "node:test";
import { GuestError } from "../../../src/virtio/errors.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import { readChain } from "../../../src/virtio/queue/chain.ts";
import { Queue } from "../../../src/virtio/queue/queue.ts";
import { prng } from "../../harness/prng.ts";

it("descriptor-chain parsing survives random tables", () => {
  const seed = Number(process.env.COVE_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const iters = Number(process.env.COVE_FUZZ_ITERS ?? 20000);
  console.log(`chain fuzz: seed=${seed} iterations=${iters} (COVE_FUZZ_SEED=${seed} to replay)`);
  const r = prng(seed);
  const memSize = 64 * 1024;
  const mem = new GuestMemory([
    { guestAddr: 0, bytes: Buffer.alloc(memSize / 2) },
    { guestAddr: memSize / 2, bytes: Buffer.alloc(memSize / 2) },
  ]);
  const size = 16;
  const table = 0x100;
  let ok = 0;
  let rejected = 0;
  const pick = (): number => {
    // Addresses: mostly plausible, sometimes at edges, sometimes absurd.
    const k = r();
    if (k < 0.7) return Math.floor(r() * memSize);
    if (k < 0.85) return memSize / 2 - Math.floor(r() * 8);
    return Math.floor(r() * 2 ** 32);
  };
  for (let i = 0; i < iters; i++) {
    // Random descriptor table, occasionally a random indirect table somewhere.
    for (let d = 0; d < size; d++) {
      const o = table + 16 * d;
      mem.writeU64(o, BigInt(pick()));
      mem.writeU32(o + 8, r() < 0.8 ? Math.floor(r() * 512) : Math.floor(r() * 2 ** 32));
      mem.writeU16(o + 12, Math.floor(r() * 8));
      mem.writeU16(o + 14, r() < 0.9 ? Math.floor(r() * size) : Math.floor(r() * 65536));
    }
    const it = 0x4000 + 16 * Math.floor(r() * 64);
    for (let d = 0; d < 8; d++) {
      const o = it + 16 * d;
      mem.writeU64(o, BigInt(pick()));
      mem.writeU32(o + 8, Math.floor(r() * 600));
      mem.writeU16(o + 12, Math.floor(r() * 8));
      mem.writeU16(o + 14, Math.floor(r() * 10));
    }
    if (r() < 0.3) {
      const d = Math.floor(r() * size);
      mem.writeU64(table + 16 * d, BigInt(it));
      mem.writeU32(table + 16 * d + 8, 16 * Math.floor(r() * 10));
      mem.writeU16(table + 16 * d + 12, 4);
    }
    const head = r() < 0.95 ? Math.floor(r() * size) : Math.floor(r() * 65536);
    try {
      const c = readChain(mem, table, size, head, r() < 0.9);
      const n = c.readable.length + c.writable.length;
      assert.ok(n <= size, "chain no longer than the queue");
      for (const b of [...c.readable, ...c.writable]) {
        const inside = mem.regions.some(
          (g) =>
            g.bytes.buffer === b.buffer &&
            b.byteOffset >= g.bytes.byteOffset &&
            b.byteOffset + b.length <= g.bytes.byteOffset + g.bytes.length,
        );
        assert.ok(inside, "every buffer is a view inside one guest region");
      }
      assert.equal(
        c.readableLen,
        c.readable.reduce((s, b) => s + b.length, 0),
      );
      ok++;
    } catch (e) {
      if (!(e instanceof GuestError)) {
        throw new Error(`seed ${seed} iteration ${i}: unexpected ${(e as Error).stack}`);
      }
      rejected++;
    }
  }
  console.log(`chain fuzz: ${ok} parsed, ${rejected} rejected`);
  assert.equal(ok + rejected, iters);
  assert.ok(rejected > 0 && ok > 0, "the fuzzer reached both outcomes");
});

it("the queue survives random rings (never throws, breaks cleanly)", () => {
  const seed = Number(process.env.COVE_FUZZ_SEED ?? (Date.now() + 1) % 2 ** 31);
  console.log(`ring fuzz: seed=${seed}`);
  const r = prng(seed);
  let broken = 0;
  for (let i = 0; i < 2000; i++) {
    const mem = GuestMemory.alloc(16384);
    const bytes = mem.regions[0]!.bytes;
    for (let j = 0; j < 4096; j++) bytes[Math.floor(r() * 4096)] = Math.floor(r() * 256);
    const q = new Queue(mem, { size: 8, descTable: 0, availRing: 1024, usedRing: 2048 });
    q.eventIdx = r() < 0.5;
    for (let k = 0; k < 20; k++) {
      const c = q.pop();
      if (c) q.addUsed(c.head, c.writableLen);
      q.needsNotification();
      q.enableNotification();
    }
    if (q.broken) broken++;
  }
  assert.ok(broken > 0);
});
