// rtnetlink messages: building requests (links, addresses, routes) and parsing what the kernel
// sends back. Pure functions over bytes; every read is bounds-checked and a malformed message is a
// NetlinkParseError, never an out-of-range read. Layouts: linux/netlink.h, linux/rtnetlink.h,
// linux/if_link.h, linux/if_addr.h (netlink is host-endian).
import { endianness } from "node:os";

const LE = endianness() === "LE";

export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** On NLMSG_ERROR: the request was not echoed back / extended-ack attributes follow. */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;

export const RTM_NEWLINK = 16;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_GETROUTE = 26;

export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_PREFSRC = 7;
export const RTA_TABLE = 15;

export const IFF_UP = 0x1;
export const RT_TABLE_MAIN = 254;
export const RTPROT_BOOT = 3;
export const RTN_UNICAST = 1;
export const RT_SCOPE = { universe: 0, global: 0, site: 200, link: 253, host: 254, nowhere: 255 } as const;

const IFINFOMSG_LEN = 16;
const IFADDRMSG_LEN = 8;
const RTMSG_LEN = 12;
const NLA_HDRLEN = 4;
/** The type bits of nla_type (NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off). */
const NLA_TYPE_MASK = 0x3fff;

export class NetlinkParseError extends Error {}

export const align4 = (n: number) => (n + 3) & ~3;

// ---- building ------------------------------------------------------------------------------------

export interface Attr {
  type: number;
  data: Uint8Array;
}

export const attrU32 = (type: number, v: number): Attr => {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(v >>> 0);
  else b.writeUInt32BE(v >>> 0);
  return { type, data: b };
};
export const attrBytes = (type: number, data: Uint8Array): Attr => ({ type, data });
/** A NUL-terminated string attribute (IFLA_IFNAME). */
export const attrString = (type: number, s: string): Attr => ({ type, data: Buffer.from(`${s}\0`, "utf8") });

function encodeAttrs(attrs: Attr[]): Buffer {
  const parts: Buffer[] = [];
  for (const a of attrs) {
    const len = NLA_HDRLEN + a.data.length;
    if (len > 0xffff) throw new Error(`netlink attribute ${a.type} too long`);
    const b = Buffer.alloc(align4(len));
    w16(b, 0, len);
    w16(b, 2, a.type);
    b.set(a.data, NLA_HDRLEN);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/** One netlink message: header + fixed family header + attributes. */
export function encodeMessage(type: number, flags: number, seq: number, fixed: Uint8Array, attrs: Attr[] = []): Buffer {
  const body = Buffer.concat([
    Buffer.from(fixed),
    Buffer.alloc(align4(fixed.length) - fixed.length),
    encodeAttrs(attrs),
  ]);
  const b = Buffer.alloc(NLMSG_HDRLEN + body.length);
  w32(b, 0, b.length);
  w16(b, 4, type);
  w16(b, 6, flags);
  w32(b, 8, seq);
  w32(b, 12, 0); // to the kernel
  body.copy(b, NLMSG_HDRLEN);
  return b;
}

export interface IfInfo {
  family?: number;
  index: number;
  flags?: number;
  change?: number;
}

export function ifinfomsg(i: IfInfo): Buffer {
  const b = Buffer.alloc(IFINFOMSG_LEN);
  b[0] = i.family ?? 0;
  w32(b, 4, i.index | 0);
  w32(b, 8, i.flags ?? 0);
  w32(b, 12, i.change ?? 0);
  return b;
}

export interface IfAddr {
  family: number;
  prefixlen: number;
  flags: number;
  scope: number;
  index: number;
}

export function ifaddrmsg(a: IfAddr): Buffer {
  const b = Buffer.alloc(IFADDRMSG_LEN);
  b[0] = a.family;
  b[1] = a.prefixlen;
  b[2] = a.flags & 0xff;
  b[3] = a.scope;
  w32(b, 4, a.index);
  return b;
}

export interface RtMsg {
  family: number;
  dstLen: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
}

export function rtmsg(r: RtMsg): Buffer {
  const b = Buffer.alloc(RTMSG_LEN);
  b[0] = r.family;
  b[1] = r.dstLen;
  b[4] = r.table < 256 ? r.table : 0; // bigger table ids travel in RTA_TABLE only
  b[5] = r.protocol;
  b[6] = r.scope;
  b[7] = r.type;
  return b;
}

// ---- parsing -------------------------------------------------------------------------------------

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** The bytes after the header (within nlmsg_len). */
  payload: Buffer;
}

/** Splits a datagram into messages; a header or length that does not fit is a NetlinkParseError. */
export function parseMessages(buf: Buffer): NlMsg[] {
  const out: NlMsg[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < NLMSG_HDRLEN)
      throw new NetlinkParseError(`truncated netlink header: ${buf.length - off} bytes at offset ${off}`);
    const len = r32(buf, off);
    if (len < NLMSG_HDRLEN || len > buf.length - off)
      throw new NetlinkParseError(
        `netlink message length ${len} at offset ${off} does not fit in ${buf.length - off} bytes`,
      );
    out.push({
      type: r16(buf, off + 4),
      flags: r16(buf, off + 6),
      seq: r32(buf, off + 8),
      pid: r32(buf, off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += Math.min(align4(len), buf.length - off);
  }
  return out;
}

/** Attributes after `fixedLen` bytes of family header; later duplicates win. */
export function parseAttrs(payload: Buffer, fixedLen: number): Map<number, Buffer> {
  if (payload.length < fixedLen)
    throw new NetlinkParseError(`message body of ${payload.length} bytes is shorter than its ${fixedLen}-byte header`);
  const out = new Map<number, Buffer>();
  let off = align4(fixedLen);
  while (off + NLA_HDRLEN <= payload.length) {
    const len = r16(payload, off);
    if (len < NLA_HDRLEN || len > payload.length - off)
      throw new NetlinkParseError(
        `attribute length ${len} at offset ${off} does not fit in ${payload.length - off} bytes`,
      );
    out.set(r16(payload, off + 2) & NLA_TYPE_MASK, payload.subarray(off + NLA_HDRLEN, off + len));
    off += align4(len);
  }
  return out;
}

export interface NlError {
  /** 0 for an ack, else a positive errno. */
  errno: number;
  /** The kernel's extended-ack text, when it gave one. */
  message?: string;
}

/** The body of NLMSG_ERROR (and of NLMSG_DONE, whose first 4 bytes are the dump's status). */
export function parseError(m: NlMsg): NlError {
  if (m.payload.length < 4) throw new NetlinkParseError(`netlink error message of ${m.payload.length} bytes`);
  const err = r32s(m.payload, 0);
  const res: NlError = { errno: err < 0 ? -err : err };
  if (m.type !== NLMSG_ERROR || !(m.flags & NLM_F_ACK_TLVS)) return res;
  // struct nlmsgerr = error + the request's header (+ its body unless capped), then the TLVs.
  if (m.payload.length < 4 + NLMSG_HDRLEN)
    throw new NetlinkParseError("netlink error message without the request header");
  let skip = 4 + NLMSG_HDRLEN;
  if (!(m.flags & NLM_F_CAPPED)) {
    const reqLen = r32(m.payload, 4);
    if (reqLen < NLMSG_HDRLEN || 4 + reqLen > m.payload.length)
      throw new NetlinkParseError(`echoed request length ${reqLen} does not fit in the error message`);
    skip = 4 + reqLen;
  }
  const tlvs = parseAttrs(m.payload, skip);
  const msg = tlvs.get(NLMSGERR_ATTR_MSG);
  if (msg) res.message = cString(msg);
  return res;
}

export interface LinkInfo {
  index: number;
  flags: number;
  name: string;
  /** Lower-case hex with colons; "" when the link has no hardware address. */
  mac: string;
  mtu: number;
}

/** An RTM_NEWLINK message (a dump entry or a notification). */
export function parseLink(m: NlMsg): LinkInfo {
  if (m.type !== RTM_NEWLINK) throw new NetlinkParseError(`expected RTM_NEWLINK, got type ${m.type}`);
  const attrs = parseAttrs(m.payload, IFINFOMSG_LEN);
  const mac = attrs.get(IFLA_ADDRESS);
  const mtu = attrs.get(IFLA_MTU);
  return {
    index: r32s(m.payload, 4),
    flags: r32(m.payload, 8),
    name: cString(attrs.get(IFLA_IFNAME) ?? Buffer.alloc(0)),
    mac: mac ? [...mac].map((x) => x.toString(16).padStart(2, "0")).join(":") : "",
    mtu: mtu && mtu.length >= 4 ? r32(mtu, 0) : 0,
  };
}

export interface AddrInfo {
  family: number;
  prefixlen: number;
  flags: number;
  scope: number;
  index: number;
  /** IFA_LOCAL, else IFA_ADDRESS (raw bytes). */
  address?: Buffer;
  /** IFA_FLAGS when present, else the 8-bit ifa_flags. */
  allFlags: number;
}

export function parseAddr(m: NlMsg): AddrInfo {
  if (m.type !== RTM_NEWADDR) throw new NetlinkParseError(`expected RTM_NEWADDR, got type ${m.type}`);
  const attrs = parseAttrs(m.payload, IFADDRMSG_LEN);
  const f = attrs.get(IFA_FLAGS);
  return {
    family: m.payload.readUInt8(0),
    prefixlen: m.payload.readUInt8(1),
    flags: m.payload.readUInt8(2),
    scope: m.payload.readUInt8(3),
    index: r32(m.payload, 4),
    address: attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS),
    allFlags: f && f.length >= 4 ? r32(f, 0) : m.payload.readUInt8(2),
  };
}

export interface RouteInfo {
  family: number;
  dstLen: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  dst?: Buffer;
  gateway?: Buffer;
  oif?: number;
  priority?: number;
  prefsrc?: Buffer;
}

export function parseRoute(m: NlMsg): RouteInfo {
  if (m.type !== RTM_NEWROUTE) throw new NetlinkParseError(`expected RTM_NEWROUTE, got type ${m.type}`);
  const attrs = parseAttrs(m.payload, RTMSG_LEN);
  const u32 = (t: number) => {
    const a = attrs.get(t);
    return a && a.length >= 4 ? r32(a, 0) : undefined;
  };
  return {
    family: m.payload.readUInt8(0),
    dstLen: m.payload.readUInt8(1),
    table: u32(RTA_TABLE) ?? m.payload.readUInt8(4),
    protocol: m.payload.readUInt8(5),
    scope: m.payload.readUInt8(6),
    type: m.payload.readUInt8(7),
    dst: attrs.get(RTA_DST),
    gateway: attrs.get(RTA_GATEWAY),
    oif: u32(RTA_OIF),
    priority: u32(RTA_PRIORITY),
    prefsrc: attrs.get(RTA_PREFSRC),
  };
}

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString("utf8");
}

// Host-endian integer access (netlink is not network byte order).
function r16(b: Buffer, o: number): number {
  return LE ? b.readUInt16LE(o) : b.readUInt16BE(o);
}
function r32(b: Buffer, o: number): number {
  return LE ? b.readUInt32LE(o) : b.readUInt32BE(o);
}
function r32s(b: Buffer, o: number): number {
  return LE ? b.readInt32LE(o) : b.readInt32BE(o);
}
function w16(b: Buffer, o: number, v: number): void {
  if (LE) b.writeUInt16LE(v, o);
  else b.writeUInt16BE(v, o);
}
function w32(b: Buffer, o: number, v: number): void {
  if (LE) b.writeUInt32LE(v >>> 0, o);
  else b.writeUInt32BE(v >>> 0, o);
}
