// IP addresses and prefixes as the host sends them (strings) and as netlink carries them (bytes).
// Everything here validates: a malformed value is an Error with a message naming it.
import { isIPv4, isIPv6 } from "node:net";

export type Family = "inet" | "inet6";
export const AF_INET = 2;
export const AF_INET6 = 10;

export function afOf(f: Family): number {
  return f === "inet" ? AF_INET : AF_INET6;
}

export function familyOf(ip: string): Family | undefined {
  if (isIPv4(ip)) return "inet";
  if (isIPv6(ip) && !ip.includes("%")) return "inet6";
  return undefined;
}

/** The address's bytes (4 or 16); throws on anything that is not a plain IPv4/IPv6 address. */
export function ipBytes(ip: string): Buffer {
  const f = familyOf(ip);
  if (f === "inet") return Buffer.from(ip.split(".").map(Number));
  if (f !== "inet6") throw new Error(`"${ip.slice(0, 64)}" is not an IP address`);
  let s = ip;
  const tail: number[] = [];
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s)?.[1];
  if (v4) {
    const b = [...ipBytes(v4)] as [number, number, number, number];
    tail.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
    s = s.slice(0, -v4.length);
    if (s.endsWith(":") && !s.endsWith("::")) s = s.slice(0, -1);
  }
  const [head, rest] = s.split("::");
  const parse = (p: string | undefined) => (p ? p.split(":").map((g) => Number.parseInt(g, 16)) : []);
  const h = parse(head);
  const r = [...parse(rest), ...tail];
  const groups =
    rest === undefined && !s.includes("::")
      ? [...h, ...tail]
      : [...h, ...new Array(8 - h.length - r.length).fill(0), ...r];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(g, i * 2);
  return out;
}

/** Formats 4 or 16 address bytes (RFC 5952 for IPv6: lower case, longest zero run as ::). */
export function formatIp(b: Uint8Array): string {
  if (b.length === 4) return [...b].join(".");
  if (b.length !== 16) throw new Error(`an IP address has 4 or 16 bytes, not ${b.length}`);
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[i] ?? 0) << 8) | (b[i + 1] ?? 0));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

export interface Prefix {
  family: Family;
  address: Buffer;
  len: number;
  /** As given, for messages. */
  text: string;
}

/** "10.1.2.3/24" or "fd00::5/64". `network`: host bits must be zero (route destinations). */
export function parseCidr(s: string, opts: { network?: boolean } = {}): Prefix {
  if (typeof s !== "string" || s.length > 64) throw new Error("a CIDR must be a short string");
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s) as [string, string, string] | null;
  if (!m) throw new Error(`"${s}" is not a CIDR (address/prefix length)`);
  const family = familyOf(m[1]);
  if (!family) throw new Error(`"${s}": "${m[1]}" is not an IP address`);
  const len = Number(m[2]);
  const max = family === "inet" ? 32 : 128;
  if (len > max) throw new Error(`"${s}": prefix length ${len} is over ${max}`);
  const address = ipBytes(m[1]);
  if (opts.network && !hostBitsZero(address, len))
    throw new Error(`"${s}": host bits are set (the network is not ${m[1]})`);
  return { family, address, len, text: s };
}

function hostBitsZero(b: Buffer, len: number): boolean {
  for (let bit = len; bit < b.length * 8; bit++) if ((b[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) return false;
  return true;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Lower-case "aa:bb:cc:dd:ee:ff"; throws otherwise. */
export function normalizeMac(s: unknown): string {
  const m = typeof s === "string" ? s.toLowerCase() : "";
  if (!MAC_RE.test(m)) throw new Error(`"${String(s).slice(0, 64)}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return m;
}

export function formatMac(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Route scopes by name (as `ip route ... scope <name>`). */
export const RT_SCOPE_NAMES: Record<string, number> = { global: 0, universe: 0, site: 200, link: 253, host: 254 };
