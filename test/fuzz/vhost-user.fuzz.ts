// vhost-user messages, fds included, from a hostile or broken frontend: every request type with
// payloads of any length and content, ring indexes in and out of range, memory tables of any
// shape backed by memfds of any size (or by fds that are not memfds), eventfds and fds that are
// not eventfds as kick/call/err fds, NEED_REPLY with and without REPLY_ACK, kicks on the rings it
// set up; and now and then the same over the real socket, cut anywhere, with fds on any byte and
// sizes that lie. A vsock device sits behind the backend.
// Invariants, besides the framework's: after the frontend goes, no fd and no mapping of the run
// is left; one reply at most per request, exactly one for NEED_REPLY once REPLY_ACK is on; fds
// held while a message is assembled ≤ MAX_MESSAGE_FDS.
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { eventfdCreate, eventfdWrite } from "../../src/native/eventfd.ts";
import { sendWithFds } from "../../src/native/fdpass.ts";
import { memfdCreate } from "../../src/native/mmap.ts";
import { bit, VIRTIO_F_VERSION_1 } from "../../src/virtio/device.ts";
import { VhostUserBackend } from "../../src/virtio/vhost-user/backend.ts";
import {
  FLAG_NEED_REPLY,
  HEADER_SIZE,
  MAX_MESSAGE_FDS,
  MAX_PAYLOAD,
  ProtocolFeature,
  REQ_NAMES,
  Req,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_VERSION,
} from "../../src/virtio/vhost-user/messages.ts";
import { VsockDevice } from "../../src/virtio/vsock/device.ts";
import { TestFrontend } from "../unit/virtio/vhost-user-frontend.ts";
import { type Fuzzer, type FuzzOptions, type FuzzReport, type Recorder, type Rng, runCases } from "./fuzz.ts";

const logger = pino({ level: "silent" });
const MEMFD = "cove-fuzz-vu";
const UVA = 0x7f00_0000_0000n;

interface Internals {
  /** One request: its handler, REPLY_ACK, and for a failing one: its fds closed, a failure reply. */
  onMessage(m: { req: number; flags: number; payload: Buffer; fds: number[] }): void;
  reply(req: number, payload: Buffer): void;
  /** The front-end's connection; its reader holds the fds of a message not yet complete. */
  conn?: { reader: { fds: number[] } };
  rings: { kickFd?: number }[];
}

const openFds = (): number => readdirSync("/proc/self/fd").length;
const mappings = (): number => readFileSync("/proc/self/maps", "utf8").split(`memfd:${MEMFD}`).length - 1;

/** An fd of some kind for the backend to own: an eventfd mostly, else a memfd or /dev/null. */
function someFd(rng: Rng): number {
  const k = rng.next();
  if (k < 0.7) return eventfdCreate();
  if (k < 0.9) return memfdCreate(MEMFD, rng.pick([4096, 65536]));
  return openSync("/dev/null", "r");
}

function memTable(rng: Rng, fds: number[]): Buffer {
  const n = rng.chance(0.9) ? rng.range(1, 3) : rng.int(12);
  const p = Buffer.alloc(8 + 32 * n);
  p.writeUInt32LE(rng.chance(0.95) ? n : rng.u32(), 0);
  let gpa = 0;
  for (let i = 0; i < n; i++) {
    const size = rng.chance(0.8) ? rng.pick([65536, 1 << 20]) : rng.edgy();
    const fd = rng.chance(0.9) ? memfdCreate(MEMFD, rng.chance(0.9) ? size : rng.pick([0, 4096])) : someFd(rng);
    fds.push(fd);
    const o = 8 + 32 * i;
    p.writeBigUInt64LE(BigInt(rng.chance(0.9) ? gpa : rng.edgy()), o);
    p.writeBigUInt64LE(BigInt(size), o + 8);
    p.writeBigUInt64LE(UVA + BigInt(gpa), o + 16);
    p.writeBigUInt64LE(BigInt(rng.chance(0.95) ? 0 : rng.edgy()), o + 24);
    gpa += size;
  }
  if (rng.chance(0.05)) fds.push(someFd(rng)); // one fd too many
  return rng.chance(0.05) ? p.subarray(0, rng.int(p.length)) : p;
}

/** A message of the given request: payload shaped for it (mostly right, sometimes short or random). */
function message(rng: Rng, req: number, rings: number, ringHint?: number): { payload: Buffer; fds: number[] } {
  const fds: number[] = [];
  const ring = () => ringHint ?? (rng.chance(0.9) ? rng.int(rings) : rng.edgy());
  const u64 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v & 0xffff_ffff_ffff_ffffn, 0);
    return b;
  };
  const state = (a: number, b: number) => {
    const s = Buffer.alloc(8);
    s.writeUInt32LE(a >>> 0, 0);
    s.writeUInt32LE(b >>> 0, 4);
    return s;
  };
  let payload: Buffer;
  switch (req) {
    case Req.SET_FEATURES:
      payload = u64(rng.chance(0.8) ? bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) : rng.u64());
      break;
    case Req.SET_PROTOCOL_FEATURES:
      payload = u64(rng.chance(0.8) ? bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG) : rng.u64());
      break;
    case Req.SET_MEM_TABLE:
      payload = memTable(rng, fds);
      break;
    case Req.SET_VRING_ENABLE:
      payload = state(ring(), ringHint !== undefined || rng.chance(0.7) ? 1 : rng.edgy());
      break;
    case Req.SET_VRING_NUM:
    case Req.SET_VRING_BASE:
    case Req.GET_VRING_BASE:
      payload = state(ring(), ringHint !== undefined || rng.chance(0.8) ? rng.pick([0, 16, 64]) : rng.edgy());
      break;
    case Req.SET_VRING_ADDR: {
      payload = Buffer.alloc(40);
      payload.writeUInt32LE(ring(), 0);
      for (const [o, a] of [
        [8, 0x1000],
        [16, 0x3000],
        [24, 0x2000],
      ] as const)
        payload.writeBigUInt64LE(rng.chance(0.85) ? UVA + BigInt(a) : rng.u64(), o);
      break;
    }
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR: {
      const nofd = rng.chance(0.1);
      payload = u64(BigInt(ring()) | (nofd ? 0x100n : 0n));
      if (!nofd && rng.chance(0.95)) fds.push(someFd(rng));
      break;
    }
    case Req.GET_CONFIG:
    case Req.SET_CONFIG: {
      const size = rng.chance(0.8) ? rng.int(16) : rng.edgy();
      payload = Buffer.alloc(12 + Math.min(size, 64));
      payload.writeUInt32LE(rng.chance(0.8) ? rng.int(16) : rng.u32(), 0);
      payload.writeUInt32LE(size, 4);
      break;
    }
    case Req.SET_BACKEND_REQ_FD:
      if (rng.chance(0.9)) fds.push(someFd(rng));
      payload = Buffer.alloc(0);
      break;
    default:
      payload = rng.bytes(rng.int(16));
  }
  if (rng.chance(0.05)) payload = payload.subarray(0, rng.int(payload.length + 1));
  if (rng.chance(0.03)) for (let i = rng.range(1, 4); i > 0; i--) fds.push(someFd(rng));
  return { payload, fds };
}

const REQS = Object.values(Req) as number[];

/** The order QEMU sets a device up in (payloads still come from message(), mostly well-formed). */
const SETUP = [
  Req.SET_FEATURES,
  Req.SET_MEM_TABLE,
  Req.SET_VRING_NUM,
  Req.SET_VRING_ADDR,
  Req.SET_VRING_BASE,
  Req.SET_VRING_CALL,
  Req.SET_VRING_KICK,
  Req.SET_VRING_NUM,
  Req.SET_VRING_ADDR,
  Req.SET_VRING_BASE,
  Req.SET_VRING_CALL,
  Req.SET_VRING_KICK,
  Req.SET_VRING_ENABLE,
  Req.SET_VRING_ENABLE,
];
/** The ring each SETUP message is for. */
const SETUP_RING = [undefined, undefined, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1];

function pickReq(rng: Rng): number {
  return rng.chance(0.95) ? rng.pick(REQS) : rng.chance(0.5) ? rng.int(64) : rng.u32();
}

/** Messages handed to the backend's dispatcher directly: the request state machine. */
async function direct(be: VhostUserBackend, rng: Rng, rec: Recorder): Promise<void> {
  const b = be as unknown as Internals;
  let replies = 0;
  const reply = b.reply.bind(b);
  b.reply = (req, payload) => {
    replies++;
    reply(req, payload);
  };
  let replyAck = false;
  // Often a frontend that sets the device up properly first, so the rest hits a running device.
  const setup = rng.chance(0.4) ? SETUP : [];
  const steps = setup.length + rng.range(1, 30);
  for (let s = 0; s < steps; s++) {
    const req = setup[s] ?? pickReq(rng);
    rec.op(REQ_NAMES[req] ?? "unknown request");
    const { payload, fds } = message(rng, req, 2, s < setup.length ? SETUP_RING[s] : undefined);
    const needReply = rng.chance(0.3);
    const before = replies;
    if (req === Req.SET_PROTOCOL_FEATURES && payload.length >= 8)
      replyAck = (payload.readBigUInt64LE(0) & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
    b.onMessage({ req, flags: needReply ? FLAG_NEED_REPLY : 0, payload, fds });
    const got = replies - before;
    rec.bounded("repliesPerRequest", got, 1);
    if (needReply && replyAck && got !== 1) rec.violate(`${REQ_NAMES[req] ?? req} with NEED_REPLY got ${got} replies`);
    rec.state(be.running ? "running" : be.guestMemory ? "memory mapped" : "no memory");
    // The guest kicks a ring the backend watches.
    if (rng.chance(0.2)) {
      const r = b.rings[rng.int(2)];
      if (r?.kickFd !== undefined) {
        rec.op("kick");
        try {
          eventfdWrite(r.kickFd);
        } catch {
          // the frontend made a read-only fd its kick fd: nothing to signal
        }
        await new Promise((res) => setImmediate(res));
      }
    }
  }
}

/** The same over the real socket: bytes cut anywhere, fds on any chunk, sizes that lie. */
async function wire(be: VhostUserBackend, rng: Rng, rec: Recorder): Promise<void> {
  const fe = new TestFrontend(be.socketPath);
  try {
    const n = rng.range(1, 8);
    for (let i = 0; i < n; i++) {
      const req = pickReq(rng);
      rec.op(`wire ${REQ_NAMES[req] ?? "unknown request"}`);
      const { payload, fds } = message(rng, req, 2);
      const m = Buffer.alloc(HEADER_SIZE + payload.length);
      m.writeUInt32LE(req >>> 0, 0);
      m.writeUInt32LE(VHOST_USER_VERSION | (rng.chance(0.3) ? FLAG_NEED_REPLY : 0), 4);
      m.writeUInt32LE(rng.chance(0.95) ? payload.length : rng.chance(0.5) ? MAX_PAYLOAD + 1 : rng.edgy(), 8);
      payload.copy(m, HEADER_SIZE);
      const cuts = rng.chance(0.7) ? [m.length] : [rng.int(m.length + 1), m.length].sort((a, b) => a - b);
      let off = 0;
      for (const cut of cuts) {
        const chunk = m.subarray(off, cut);
        const attach = off === 0 ? fds.splice(0, 16) : rng.chance(0.3) ? [eventfdCreate()] : [];
        try {
          if (chunk.length > 0) sendWithFds(fe.fd, chunk, attach);
        } catch {
          // the backend hung up on us (it may: the message was bad)
        } finally {
          for (const fd of attach) safeClose(fd); // our copies: the backend got its own
        }
        off = cut;
      }
      for (const fd of fds) safeClose(fd);
      // Now and then the frontend hangs up before the backend answered (its reply hits EPIPE).
      if (rng.chance(0.1)) break;
      await new Promise((r) => setTimeout(r, 0));
      rec.bounded("fdsWhileAssembling", (be as unknown as Internals).conn?.reader.fds.length ?? 0, MAX_MESSAGE_FDS);
    }
  } finally {
    fe.close();
  }
  await new Promise((r) => setTimeout(r, 1));
}

function safeClose(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

let socketDir = "";

async function oneCase(rng: Rng, rec: Recorder): Promise<void> {
  const baseline = { fds: openFds() };
  const dev = new VsockDevice({ guestCid: 3, logger });
  const useSocket = rng.chance(0.05);
  const be = new VhostUserBackend(dev, join(socketDir, "vu.sock"), { queues: 2, logger });
  be.listen();
  try {
    if (useSocket) await wire(be, rng, rec);
    else {
      // A connected frontend (replies go to it; its going away cleans up), messages handed to
      // the dispatcher directly.
      const fe = new TestFrontend(be.socketPath);
      try {
        for (let i = 0; i < 1000 && (be as unknown as Internals).conn === undefined; i++)
          await new Promise((r) => setImmediate(r));
        await direct(be, rng, rec);
      } finally {
        fe.close();
      }
    }
  } finally {
    be.close();
  }
  await new Promise((r) => setImmediate(r));
  rec.bounded("fdsLeftAfterClose", openFds() - baseline.fds, 0);
  rec.bounded("mappingsLeftAfterClose", mappings(), 0);
}

export const fuzzer: Fuzzer = {
  name: "vhost-user",
  async run(opts: FuzzOptions): Promise<FuzzReport> {
    socketDir = mkdtempSync(join(tmpdir(), "cove-fuzz-vu-"));
    try {
      return await runCases("vhost-user", opts, ({ rng, rec }) => oneCase(rng, rec));
    } finally {
      rmSync(socketDir, { recursive: true, force: true });
    }
  },
};
