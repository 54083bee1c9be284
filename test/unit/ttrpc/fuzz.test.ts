// Fuzz: random and mutated frames thrown at a server (and random responses at a client), bounded,
// seeded (TTRPC_FUZZ_SEED=<n> to replay; the seed is printed). The server never throws, answers or
// ignores every frame with a well-formed response, still serves a valid call at the end of each
// connection, and holds no connection or call state once every peer is gone.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { messageType } from "../../../src/proto/root.ts";
import { encodeRequestFrame, encodeResponseFrame } from "../../../src/ttrpc/envelope.ts";
import { encodeFrame, writeHeader } from "../../../src/ttrpc/frame.ts";
import { Code, TtrpcClient, TtrpcError, TtrpcServer } from "../../../src/ttrpc/index.ts";
import { duplexPair, prng, RawPeer } from "./pair.ts";

const SEED = Number(process.env.TTRPC_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const FRAMES = Number(process.env.TTRPC_FUZZ_FRAMES ?? 2000);
const MAX = 4096; // small limit so oversized frames are cheap to send
const LAST_ID = 0xffffffff; // the final valid call of each connection; random ids stay below it

let uncaught = 0;
const onUncaught = () => uncaught++;
before(() => {
  console.log(`ttrpc fuzz seed ${SEED} (replay with TTRPC_FUZZ_SEED=${SEED}), ${FRAMES} frames`);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onUncaught);
});
after(() => {
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onUncaught);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function bytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

const connect = messageType("containerd.task.v2.ConnectRequest");

/** One frame whose header length matches what is sent, so the stream stays in sync. */
function saneFrame(rand: () => number, nextId: () => number): Buffer {
  const kind = Math.floor(rand() * 9);
  const id = rand() < 0.7 ? nextId() : Math.floor(rand() * 2 ** 31);
  const services = ["t.S", "containerd.task.v2.Task", "nope", ""];
  const methods = ["Echo", "Fail", "Hang", "Connect", "State", ""];
  const envelope = () =>
    encodeRequestFrame(id, {
      service: pick(rand, services),
      method: pick(rand, methods),
      payload:
        rand() < 0.5
          ? connect.encode({ id: "x".repeat(Math.floor(rand() * 10)) }).finish()
          : bytes(rand, Math.floor(rand() * 64)),
      timeoutNano: rand() < 0.4 ? Math.floor(rand() * 20e6) : rand() < 0.1 ? -Math.floor(rand() * 1e9) : 0,
      metadata:
        rand() < 0.3
          ? [
              ["k", "v"],
              ["k", String(rand())],
            ]
          : [],
    });
  switch (kind) {
    case 0:
    case 1:
      return envelope();
    case 2: {
      // Bit flips inside the envelope (header re-written to stay consistent).
      const f = envelope();
      for (let i = 0, n = 1 + Math.floor(rand() * 4); i < n && f.length > 10; i++) {
        f[10 + Math.floor(rand() * (f.length - 10))]! ^= 1 << Math.floor(rand() * 8);
      }
      return f;
    }
    case 3: {
      // Truncated or extended envelope.
      const f = envelope();
      const body =
        rand() < 0.5
          ? f.subarray(10, 10 + Math.floor(rand() * (f.length - 10)))
          : Buffer.concat([f.subarray(10), bytes(rand, 8)]);
      return encodeFrame(id, 1, f[9]!, body);
    }
    case 4:
      return encodeFrame(id, 1, Math.floor(rand() * 256), bytes(rand, Math.floor(rand() * 100)));
    case 5:
      return encodeFrame(id, Math.floor(rand() * 256), Math.floor(rand() * 256), bytes(rand, Math.floor(rand() * 50)));
    case 6: {
      // Oversized, with its bytes really sent.
      const f = Buffer.alloc(10 + MAX + 1 + Math.floor(rand() * 100));
      writeHeader(f, f.length - 10, id, pick(rand, [1, 2, 3, 9]), 0);
      return f;
    }
    case 7:
      return encodeResponseFrame(id, rand() < 0.5 ? { code: 5, message: "x" } : undefined, bytes(rand, 5));
    default:
      return encodeFrame(id, 3, Math.floor(rand() * 8), bytes(rand, Math.floor(rand() * 20)));
  }
}

function sendChunked(rand: () => number, peer: RawPeer, data: Buffer): void {
  let o = 0;
  while (o < data.length) {
    const n = 1 + Math.floor(rand() * (rand() < 0.5 ? 16 : 2048));
    peer.write(data.subarray(o, o + n));
    o += n;
  }
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(2);
  }
}

describe("ttrpc fuzz", () => {
  it("server survives random and mutated frames and leaks nothing", async () => {
    const rand = prng(SEED);
    const server = new TtrpcServer({ maxMessageSize: MAX });
    server.registerRaw("t.S", "Echo", async (p) => p);
    server.registerRaw("t.S", "Fail", async () => {
      throw rand() < 0.5 ? new TtrpcError(Code.NOT_FOUND, "nf") : new Error("plain");
    });
    server.registerRaw(
      "t.S",
      "Hang",
      (_p, ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
    );
    server.registerService("containerd.task.v2.Task", {
      Connect: async (req: { id: string }) => ({ shim_pid: req.id.length, task_pid: 1, version: "f" }),
    });

    let sent = 0;
    let conns = 0;
    let answered = 0;
    while (sent < FRAMES) {
      const [a, b] = duplexPair();
      server.serve(a);
      const peer = new RawPeer(b);
      conns++;
      let id = 1;
      const nextId = () => {
        id += 2 * (1 + Math.floor(rand() * 3));
        return id;
      };
      const requestIds = new Set<number>();
      const n = Math.min(FRAMES - sent, 5 + Math.floor(rand() * 30));
      const frames: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const f = saneFrame(rand, nextId);
        if (f[8] === 1) requestIds.add(f.readUInt32BE(4));
        frames.push(f);
      }
      sent += n;
      sendChunked(rand, peer, Buffer.concat(frames));
      // The connection must still work: a valid call with the highest id.
      peer.write(
        encodeRequestFrame(LAST_ID, {
          service: "t.S",
          method: "Echo",
          payload: Buffer.from("alive"),
          timeoutNano: 0,
          metadata: [],
        }),
      );
      await until(
        () => peer.responses.some((r) => r.header.streamId === LAST_ID),
        5000,
        `final call on connection ${conns} (seed ${SEED})`,
      );
      const last = peer.responses.find((r) => r.header.streamId === LAST_ID)!;
      assert.equal(last.response.status, undefined, `seed ${SEED}`);
      assert.equal(Buffer.from(last.response.payload).toString(), "alive");
      for (const r of peer.responses) {
        assert.ok(
          r.header.streamId === LAST_ID || requestIds.has(r.header.streamId),
          `answer to a stream never sent (seed ${SEED})`,
        );
      }
      assert.equal(peer.other.length, 0, "server sends only response frames");
      answered += peer.responses.length;
      // End some connections with garbage that breaks framing, then go away.
      if (rand() < 0.5) sendChunked(rand, peer, bytes(rand, Math.floor(rand() * 300)));
      if (rand() < 0.3) await sleep(1);
      b.destroy();
    }
    await until(() => server.stats().connections === 0 && server.stats().inFlight === 0, 5000, "server state drained");
    assert.deepEqual(server.stats(), { connections: 0, inFlight: 0 });
    assert.equal(uncaught, 0, "no uncaught exceptions or unhandled rejections");
    assert.ok(answered > conns, "requests were answered, not just the final calls");
    await server.close();
  });

  it("client survives random response frames; every call settles", async () => {
    const rand = prng(SEED ^ 0x5bd1e995);
    for (let round = 0; round < 50; round++) {
      const [a, b] = duplexPair();
      const client = new TtrpcClient(a, { maxMessageSize: MAX });
      b.on("data", () => {});
      const calls = Array.from({ length: 8 }, (_, i) =>
        client.callRaw("t.S", "M", Buffer.from([i]), { timeoutMs: 20 }).then(
          () => "ok",
          (e: unknown) => (e instanceof TtrpcError ? `err${e.code}` : "bad"),
        ),
      );
      const junk: Buffer[] = [];
      for (let i = 0; i < 20; i++) {
        const id = rand() < 0.6 ? 1 + 2 * Math.floor(rand() * 10) : Math.floor(rand() * 2 ** 32);
        const k = Math.floor(rand() * 4);
        if (k === 0)
          junk.push(
            encodeResponseFrame(
              id,
              rand() < 0.5 ? { code: Math.floor(rand() * 20), message: "m" } : undefined,
              bytes(rand, 4),
            ),
          );
        else if (k === 1) junk.push(encodeFrame(id, 2, 0, bytes(rand, Math.floor(rand() * 40))));
        else if (k === 2) junk.push(encodeFrame(id, Math.floor(rand() * 256), 0, bytes(rand, 10)));
        else {
          const f = Buffer.alloc(10 + MAX + 5);
          writeHeader(f, MAX + 5, id, 2, 0);
          junk.push(f);
        }
      }
      const data = Buffer.concat(junk);
      for (let o = 0; o < data.length; ) {
        const n = 1 + Math.floor(rand() * 512);
        b.write(data.subarray(o, o + n));
        o += n;
      }
      if (rand() < 0.5) b.write(bytes(rand, 37));
      const outcomes = await Promise.all(calls);
      assert.ok(!outcomes.includes("bad"), `every rejection is a TtrpcError (seed ${SEED})`);
      assert.equal(client.inFlight, 0);
      client.close();
      await client.closed;
    }
    assert.equal(uncaught, 0);
  });
});
