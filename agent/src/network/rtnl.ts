// A request/answer channel to the kernel's rtnetlink: each request asks for an ack (or is a dump)
// and is matched to its answers by sequence number; an NLMSG_ERROR becomes a NetlinkError with the
// errno's name and the kernel's extended-ack text.
import { closeSync } from "node:fs";
import { getSystemErrorMap } from "node:util";
import { netlinkOpen, netlinkRecv, netlinkSend } from "../../../src/native/netlink.ts";
import {
  type Attr,
  encodeMessage,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  type NlMsg,
  parseError,
  parseMessages,
} from "./rtnetlink.ts";

export class NetlinkError extends Error {
  constructor(
    readonly errno: number,
    /** "EEXIST", "ENETUNREACH", ... */
    readonly code: string,
    what: string,
    detail?: string,
  ) {
    super(`${what}: ${code} (${errnoMessage(errno)})${detail ? `: ${detail}` : ""}`);
  }
}

const errnoMap = getSystemErrorMap();

export function errnoName(errno: number): string {
  return errnoMap.get(-errno)?.[0] ?? `errno ${errno}`;
}
function errnoMessage(errno: number): string {
  return errnoMap.get(-errno)?.[1] ?? "unknown error";
}

/** Turns an error/done message into a NetlinkError, or undefined for an ack (errno 0). */
export function errorOf(m: NlMsg, what: string): NetlinkError | undefined {
  const e = parseError(m);
  if (e.errno === 0) return undefined;
  return new NetlinkError(e.errno, errnoName(e.errno), what, e.message);
}

const RECV_BUF = 256 << 10;

export class Rtnl {
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly buf = Buffer.alloc(RECV_BUF);
  private fd: number;

  /** `netns`: a namespace path (tests); null: the agent's own (the guest's). */
  constructor(netns: string | null = null, timeoutMs = 5000) {
    this.fd = netlinkOpen(netns, timeoutMs);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  /** Sends a change request and waits for its ack; throws NetlinkError when the kernel refuses. */
  request(type: number, flags: number, fixed: Uint8Array, attrs: Attr[], what: string): void {
    const seq = this.next();
    netlinkSend(this.fd, encodeMessage(type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, fixed, attrs));
    for (;;) {
      for (const m of this.receive()) {
        if (m.seq !== seq) continue; // a stale answer to an earlier request
        if (m.type === NLMSG_ERROR) {
          const err = errorOf(m, what);
          if (err) throw err;
          return;
        }
      }
    }
  }

  /** Sends a dump request; returns every message of the answer (NLMSG_DONE excluded). */
  dump(type: number, fixed: Uint8Array, what: string): NlMsg[] {
    const seq = this.next();
    netlinkSend(this.fd, encodeMessage(type, NLM_F_REQUEST | NLM_F_DUMP, seq, fixed));
    const out: NlMsg[] = [];
    for (;;) {
      for (const m of this.receive()) {
        if (m.seq !== seq || m.type === NLMSG_NOOP) continue;
        if (m.type === NLMSG_ERROR || m.type === NLMSG_DONE) {
          const err = errorOf(m, what);
          if (err) throw err;
          return out;
        }
        out.push(m);
      }
    }
  }

  private next(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  private receive(): NlMsg[] {
    const n = netlinkRecv(this.fd, this.buf);
    // Copied: the receive buffer is reused by the next datagram.
    return parseMessages(Buffer.from(this.buf.subarray(0, n)));
  }
}
