// Test helpers for networking: private network namespaces the test creates (and always
// removes), a UDP peer process inside one, and builders/parsers for the few frames the tests
// exchange (ARP, IPv4/UDP). Every address used lives only inside these namespaces.
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Why networking tests cannot run here, or undefined if they can. */
export function netUnavailable(): string | undefined {
  if (!isRoot()) return "needs root (network namespaces and taps)";
  if (!existsSync("/dev/net/tun")) return "no /dev/net/tun";
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
    execFileSync("tc", ["-V"], { stdio: "ignore" });
  } catch {
    return "iproute2 (ip, tc) is not installed";
  }
  return undefined;
}

export function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 10_000 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")}: ${err.stderr?.trim() || err.message}`);
  }
}

let seq = 0;

/** A network namespace under /var/run/netns made by this test; remove() deletes it. */
export class TestNetns {
  readonly path: string;
  private constructor(readonly name: string) {
    this.path = `/var/run/netns/${name}`;
  }

  static create(tag: string): TestNetns {
    const ns = new TestNetns(`cove-test-${tag}-${process.pid}-${seq++}`);
    sh("ip", ["netns", "add", ns.name]);
    ns.ip("link", "set", "lo", "up");
    // IPv6 autoconfiguration chatter (router/neighbour solicitations) is noise for these tests.
    ns.exec("sysctl", ["-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
    return ns;
  }

  ip(...args: string[]): string {
    return sh("ip", ["-n", this.name, ...args]);
  }

  /** `ip -j` output parsed. */
  ipJson<T = Record<string, unknown>[]>(...args: string[]): T {
    return JSON.parse(sh("ip", ["-j", "-n", this.name, ...args]) || "[]") as T;
  }

  exec(cmd: string, args: string[]): string {
    return sh("ip", ["netns", "exec", this.name, cmd, ...args]);
  }

  macOf(ifname: string): string {
    const [link] = this.ipJson<{ address: string }[]>("link", "show", "dev", ifname);
    if (!link) throw new Error(`no interface ${ifname} in ${this.name}`);
    return link.address;
  }

  remove(): void {
    try {
      sh("ip", ["netns", "del", this.name]);
    } catch {
      // already gone
    }
  }

  static exists(name: string): boolean {
    return existsSync(`/var/run/netns/${name}`);
  }
}

export interface Datagram {
  from: string;
  port: number;
  data: Buffer;
}

const PEER = `
const dgram = require("node:dgram");
const rl = require("node:readline").createInterface({ input: process.stdin });
const [addr, port] = process.argv.slice(1);
const s = dgram.createSocket("udp4");
s.on("message", (m, r) => process.stdout.write(JSON.stringify({ from: r.address, port: r.port, data: m.toString("hex") }) + "\\n"));
s.on("error", (e) => { process.stderr.write(String(e) + "\\n"); process.exit(2); });
s.bind(Number(port), addr, () => process.stdout.write(JSON.stringify({ ready: true }) + "\\n"));
rl.on("line", (l) => { const c = JSON.parse(l); s.send(Buffer.from(c.data, "hex"), c.port, c.to); });
rl.on("close", () => process.exit(0));
setTimeout(() => process.exit(3), 60000).unref();
`;

/** A UDP socket bound inside a namespace (a child process), driven over its stdio. */
export class UdpPeer {
  readonly received: Datagram[] = [];
  private waiters: (() => void)[] = [];
  private constructor(private readonly child: ChildProcessWithoutNullStreams) {}

  static async start(ns: TestNetns, addr: string, port: number): Promise<UdpPeer> {
    const child = spawn("ip", ["netns", "exec", ns.name, process.execPath, "-e", PEER, addr, String(port)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const peer = new UdpPeer(child);
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += String(d);
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`UDP peer did not start: ${stderr}`)), 10_000);
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`UDP peer exited (${code}): ${stderr}`));
      });
      createInterface({ input: child.stdout }).on("line", (l) => {
        const m = JSON.parse(l) as { ready?: boolean; from: string; port: number; data: string };
        if (m.ready) {
          clearTimeout(timer);
          resolve();
          return;
        }
        peer.received.push({ from: m.from, port: m.port, data: Buffer.from(m.data, "hex") });
        for (const w of peer.waiters.splice(0)) w();
      });
    });
    return peer;
  }

  send(to: string, port: number, data: Buffer): void {
    this.child.stdin.write(`${JSON.stringify({ to, port, data: data.toString("hex") })}\n`);
  }

  /** Resolves once `n` datagrams have arrived; rejects after `ms`. */
  async waitFor(n: number, ms = 5000): Promise<Datagram[]> {
    const deadline = Date.now() + ms;
    while (this.received.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} datagrams (got ${this.received.length})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.received.slice(0, n);
  }

  stop(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

// ---- frames ---------------------------------------------------------------------------------

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;

export function macBytes(s: string): Buffer {
  return Buffer.from(s.split(":").map((x) => Number.parseInt(x, 16)));
}
export function ipBytes(s: string): Buffer {
  return Buffer.from(s.split(".").map(Number));
}
function ipString(b: Buffer): string {
  return [...b].join(".");
}

export function ethernet(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  macBytes(dst).copy(h, 0);
  macBytes(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

export interface Arp {
  op: number;
  senderMac: string;
  senderIp: string;
  targetIp: string;
}

export function arpReply(ourMac: string, ourIp: string, toMac: string, toIp: string): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0); // Ethernet
  a.writeUInt16BE(ETH_P_IP, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(2, 6); // reply
  macBytes(ourMac).copy(a, 8);
  ipBytes(ourIp).copy(a, 14);
  macBytes(toMac).copy(a, 18);
  ipBytes(toIp).copy(a, 24);
  return ethernet(toMac, ourMac, ETH_P_ARP, a);
}

function ipChecksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += b.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** An IPv4/UDP frame (UDP checksum 0: optional over IPv4). */
export function udpFrame(
  srcMac: string,
  dstMac: string,
  srcIp: string,
  dstIp: string,
  sport: number,
  dport: number,
  payload: Buffer,
): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + payload.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ipBytes(srcIp).copy(ip, 12);
  ipBytes(dstIp).copy(ip, 16);
  ip.writeUInt16BE(ipChecksum(ip), 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(sport, 0);
  udp.writeUInt16BE(dport, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  return ethernet(dstMac, srcMac, ETH_P_IP, Buffer.concat([ip, udp, payload]));
}

export interface Parsed {
  dst: string;
  src: string;
  type: number;
  arp?: Arp;
  udp?: { srcIp: string; dstIp: string; sport: number; dport: number; payload: Buffer };
}

export function parseFrame(f: Buffer): Parsed {
  const mac = (o: number) => [...f.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, "0")).join(":");
  const p: Parsed = { dst: mac(0), src: mac(6), type: f.readUInt16BE(12) };
  const body = f.subarray(14);
  if (p.type === ETH_P_ARP && body.length >= 28) {
    p.arp = {
      op: body.readUInt16BE(6),
      senderMac: [...body.subarray(8, 14)].map((x) => x.toString(16).padStart(2, "0")).join(":"),
      senderIp: ipString(body.subarray(14, 18)),
      targetIp: ipString(body.subarray(24, 28)),
    };
  } else if (p.type === ETH_P_IP && body.length >= 28 && body[9] === 17) {
    const ihl = (body[0]! & 0xf) * 4;
    const total = body.readUInt16BE(2);
    const udp = body.subarray(ihl, total);
    p.udp = {
      srcIp: ipString(body.subarray(12, 16)),
      dstIp: ipString(body.subarray(16, 20)),
      sport: udp.readUInt16BE(0),
      dport: udp.readUInt16BE(2),
      payload: Buffer.from(udp.subarray(8, udp.readUInt16BE(4))),
    };
  }
  return p;
}
