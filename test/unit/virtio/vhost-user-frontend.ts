// A minimal vhost-user front-end (the role QEMU plays) in TypeScript for tests: raw
// messages over the Unix socket with fds by SCM_RIGHTS, and a guest RAM region in a memfd that
// the test maps too, so a TestDriver can lay out rings the backend then serves.
import { closeFd, recvWithFds, sendWithFds, unixConnect } from "../../../src/native/fdpass.ts";
import { memfdCreate, mmapFd } from "../../../src/native/mmap.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  VHOST_USER_VERSION,
} from "../../../src/virtio/vhost-user/messages.ts";

export interface Reply {
  req: number;
  flags: number;
  payload: Buffer;
}

export class TestFrontend {
  readonly fd: number;
  private buf = Buffer.alloc(0);
  private eof = false;

  constructor(path: string) {
    this.fd = unixConnect(path);
  }

  /** Sends one message: header (request, flags, size) + payload, with fds attached. */
  send(
    req: number,
    payload: Buffer = Buffer.alloc(0),
    opts: { fds?: number[]; needReply?: boolean; size?: number } = {},
  ) {
    const m = Buffer.alloc(HEADER_SIZE + payload.length);
    m.writeUInt32LE(req, 0);
    m.writeUInt32LE(VHOST_USER_VERSION | (opts.needReply ? FLAG_NEED_REPLY : 0), 4);
    m.writeUInt32LE(opts.size ?? payload.length, 8); // tests may lie about the size
    payload.copy(m, HEADER_SIZE);
    const n = sendWithFds(this.fd, m, opts.fds ?? []);
    if (n !== m.length) throw new Error(`short send ${n}/${m.length}`);
  }

  /** The next reply, or undefined if none arrives within `ms` (the backend runs on this event loop). */
  async reply(ms = 2000): Promise<Reply | undefined> {
    const hdr = await this.read(HEADER_SIZE, ms);
    if (!hdr) return undefined;
    const size = hdr.readUInt32LE(8);
    const payload = size ? await this.read(size, ms) : Buffer.alloc(0);
    if (!payload) throw new Error("reply payload did not arrive");
    const flags = hdr.readUInt32LE(4);
    if (!(flags & FLAG_REPLY)) throw new Error(`message without the reply flag: 0x${flags.toString(16)}`);
    return { req: hdr.readUInt32LE(0), flags, payload };
  }

  async call(req: number, payload?: Buffer, opts: { fds?: number[]; needReply?: boolean } = {}): Promise<Reply> {
    this.send(req, payload, opts);
    const r = await this.reply();
    if (!r) throw new Error(`no reply to request ${req}`);
    if (r.req !== req) throw new Error(`reply to ${r.req}, expected ${req}`);
    return r;
  }

  /** A REPLY_ACK status (0 = success) or a GET_* u64 result. */
  async callU64(req: number, payload?: Buffer, opts: { fds?: number[]; needReply?: boolean } = {}): Promise<bigint> {
    const r = await this.call(req, payload, opts);
    if (r.payload.length !== 8) throw new Error(`reply of ${r.payload.length} bytes, expected 8`);
    return r.payload.readBigUInt64LE(0);
  }

  /** True once the backend closed the connection (drains anything pending). */
  async closedByPeer(ms = 2000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      this.pump();
      if (this.eof) return true;
      await tick();
    }
    return false;
  }

  private pump(): void {
    const chunk = Buffer.alloc(65536);
    for (;;) {
      const r = recvWithFds(this.fd, chunk);
      if (r === null) return;
      for (const fd of r.fds) closeFd(fd);
      if (r.bytes === 0) {
        this.eof = true;
        return;
      }
      this.buf = Buffer.concat([this.buf, chunk.subarray(0, r.bytes)]);
    }
  }

  private async read(n: number, ms: number): Promise<Buffer | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      this.pump();
      if (this.buf.length >= n) {
        const out = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        return out;
      }
      if (this.eof || Date.now() > deadline) return undefined;
      await tick();
    }
  }

  close(): void {
    closeFd(this.fd);
  }
}

function tick(): Promise<void> {
  return new Promise((r) => setTimeout(r, 1));
}

/** Guest RAM shared the vhost-user way: a memfd, mapped here, passed to the backend. */
export class SharedRam {
  readonly fd: number;
  readonly mem: GuestMemory;
  /** Keeps the mapping alive (it is unmapped when collected). */
  private readonly map: ArrayBuffer;

  constructor(
    readonly size: number,
    readonly guestAddr = 0,
    /** Where "QEMU" has it mapped: the addresses SET_VRING_ADDR uses. */
    readonly userAddr = 0x7f00_0000_0000n,
  ) {
    this.fd = memfdCreate("cove-test-ram", size);
    this.map = mmapFd(this.fd, size, 0);
    this.mem = new GuestMemory([{ guestAddr, bytes: Buffer.from(this.map) }]);
  }

  /** Guest physical → the frontend's virtual address. */
  uva(gpa: number): bigint {
    return this.userAddr + BigInt(gpa - this.guestAddr);
  }

  /** One region entry of SET_MEM_TABLE (guest addr, size, user addr, mmap offset). */
  region(): Buffer {
    const b = Buffer.alloc(32);
    b.writeBigUInt64LE(BigInt(this.guestAddr), 0);
    b.writeBigUInt64LE(BigInt(this.size), 8);
    b.writeBigUInt64LE(this.userAddr, 16);
    b.writeBigUInt64LE(0n, 24);
    return b;
  }

  close(): void {
    closeFd(this.fd);
  }
}

/** SET_MEM_TABLE payload: u32 count, u32 padding, then the regions. */
export function memTable(regions: Buffer[], count = regions.length): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(count, 0);
  return Buffer.concat([h, ...regions]);
}

export function u64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v), 0);
  return b;
}

/** A vring state (index, num) as SET_VRING_NUM / SET_VRING_BASE / SET_VRING_ENABLE carry it. */
export function vringState(index: number, num: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(num, 4);
  return b;
}

/** SET_VRING_ADDR: index, flags, then desc, used, avail, log addresses (frontend virtual). */
export function vringAddr(index: number, desc: bigint, used: bigint, avail: bigint): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(index, 0);
  b.writeBigUInt64LE(desc, 8);
  b.writeBigUInt64LE(used, 16);
  b.writeBigUInt64LE(avail, 24);
  return b;
}
