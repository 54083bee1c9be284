// The agent's network configuration against a real kernel, in two private network namespaces this
// test creates ("pod" and "node", joined by veth pairs; nothing else on the host is touched):
// the configurator itself (by MAC: rename, MTU, IPv4+IPv6 addresses, routes in order, lo, DNS;
// idempotent; NIC names swapped; precise errors), then the same through the real agent's
// ConfigureNetwork RPC with the agent running inside the pod namespace. Packets must cross: the
// node side pings the configured addresses and the pod pings the node side.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseNetworkConfig } from "../../agent/src/network/config.ts";
import { configureNetwork } from "../../agent/src/network/configure.ts";
import { grpcStatus } from "../../src/common/grpc-status.ts";
import { AgentClient, unixDialer } from "../../src/sandbox/agent/index.ts";
import { Code } from "../../src/ttrpc/index.ts";

const REPO = join(dirname(new URL(import.meta.url).pathname), "..", "..");
const BUSYBOX = "/bin/busybox";

function unavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  for (const b of ["/usr/sbin/ip", "/usr/bin/nsenter", "/usr/bin/unshare", BUSYBOX])
    if (!existsSync(b)) return `${b} is missing`;
  return undefined;
}
const skip = unavailable();
if (skip) console.error(`!!! SKIPPED: agent-net: ${skip}`);

const tag = `${process.pid % 100000}`;
const POD = `cove-agentnet-${tag}-pod`;
const NODE = `cove-agentnet-${tag}-node`;
const nsPath = (n: string) => `/run/netns/${n}`;

function ip(ns: string, ...args: string[]): string {
  return execFileSync("ip", ["-n", ns, ...args], { encoding: "utf8", timeout: 10_000 });
}
// biome-ignore lint/suspicious/noExplicitAny: `ip -j` output.
function ipj(ns: string, ...args: string[]): any[] {
  return JSON.parse(ip(ns, "-j", ...args) || "[]");
}
function ping(ns: string, addr: string): void {
  const v6 = addr.includes(":") ? ["-6"] : [];
  execFileSync("ip", ["netns", "exec", ns, BUSYBOX, "ping", ...v6, "-c", "1", "-W", "3", addr], {
    timeout: 10_000,
    stdio: "pipe",
  });
}
function macOf(ns: string, dev: string): string {
  return ipj(ns, "link", "show", "dev", dev)[0].address;
}
function link(ns: string, dev: string) {
  return ipj(ns, "link", "show", "dev", dev)[0] as { ifname: string; mtu: number; flags: string[]; address: string };
}
function addrs(ns: string, dev: string): string[] {
  return ipj(ns, "addr", "show", "dev", dev)[0]
    .addr_info.filter((a: { scope: string }) => a.scope === "global")
    .map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)
    .sort();
}
function routes(ns: string, family: "-4" | "-6"): string[] {
  return ipj(ns, family, "route", "show", "table", "main")
    .filter((r: { dst: string }) => !r.dst.startsWith("fe80"))
    .map(
      (r: { dst: string; gateway?: string; dev: string }) =>
        `${r.dst}${r.gateway ? ` via ${r.gateway}` : ""} dev ${r.dev}`,
    )
    .sort();
}
// The gRPC code the agent service edge would send for what configureNetwork threw.
function rpcCode(code: number) {
  return (e: unknown) => grpcStatus(e).code === code;
}

describe("agent network configuration (private namespaces)", { skip }, () => {
  // vethA (node) <-> vethB (pod): the main NIC; vethC (node) <-> vethD (pod): a second NIC.
  let macB = "";
  let macD = "";
  const tmp = mkdtempSync(join(tmpdir(), "cove-agentnet-"));

  before(() => {
    for (const n of [POD, NODE]) execFileSync("ip", ["netns", "add", n], { timeout: 10_000 });
    ip(NODE, "link", "add", "vethA", "type", "veth", "peer", "name", "vethB", "netns", POD);
    ip(NODE, "link", "add", "vethC", "type", "veth", "peer", "name", "vethD", "netns", POD);
    ip(NODE, "link", "set", "lo", "up");
    ip(NODE, "addr", "add", "10.231.0.1/24", "dev", "vethA");
    ip(NODE, "addr", "add", "fd31::1/64", "dev", "vethA", "nodad");
    ip(NODE, "addr", "add", "10.233.0.1/24", "dev", "vethC");
    ip(NODE, "link", "set", "vethA", "up");
    ip(NODE, "link", "set", "vethC", "up");
    macB = macOf(POD, "vethB");
    macD = macOf(POD, "vethD");
  });

  after(() => {
    for (const n of [POD, NODE]) {
      try {
        execFileSync("ip", ["netns", "del", n], { timeout: 10_000 });
      } catch {}
    }
    rmSync(tmp, { recursive: true, force: true });
    assert.ok(!existsSync(nsPath(POD)) && !existsSync(nsPath(NODE)), "test namespaces removed");
  });

  const mainConfig = () => ({
    interfaces: [{ mac: macB.toUpperCase(), name: "eth0", mtu: 1400, addresses: ["10.231.0.2/24", "fd31::2/64"] }],
    routes: [
      { dst: "10.240.0.0/16", gateway: "10.231.0.1", dev: "eth0" },
      { dst: "default", gateway: "10.231.0.1", dev: "eth0" },
      { dst: "default", gateway: "fd31::1", dev: "eth0", family: "inet6" as const },
    ],
    dns: { nameservers: ["10.231.0.53"], searches: ["ns.svc.cluster.local"], options: ["ndots:5"] },
  });

  it("configures a NIC by MAC: name, MTU, addresses, routes, lo up, resolv.conf; packets cross", () => {
    assert.ok(!link(POD, "lo").flags.includes("UP"), "lo starts down in a new namespace");
    const resolv = join(tmp, "resolv.conf");
    const done = configureNetwork(parseNetworkConfig(mainConfig()), { netns: nsPath(POD), resolvConf: resolv });
    assert.deepEqual(
      done.map((d) => [d.mac, d.name]),
      [[macB, "eth0"]],
    );
    const eth0 = link(POD, "eth0");
    assert.equal(eth0.address, macB);
    assert.equal(eth0.mtu, 1400);
    assert.ok(eth0.flags.includes("UP"));
    assert.ok(link(POD, "lo").flags.includes("UP"), "lo is up");
    assert.deepEqual(addrs(POD, "eth0"), ["10.231.0.2/24", "fd31::2/64"]);
    assert.deepEqual(routes(POD, "-4"), [
      "10.231.0.0/24 dev eth0",
      "10.240.0.0/16 via 10.231.0.1 dev eth0",
      "default via 10.231.0.1 dev eth0",
    ]);
    assert.ok(routes(POD, "-6").includes("default via fd31::1 dev eth0"), routes(POD, "-6").join(", "));
    assert.equal(
      readFileSync(resolv, "utf8"),
      "search ns.svc.cluster.local\nnameserver 10.231.0.53\noptions ndots:5\n",
    );
    ping(NODE, "10.231.0.2");
    ping(POD, "10.231.0.1");
    ping(NODE, "fd31::2");
    ping(POD, "127.0.0.1");
  });

  it("is idempotent: the same request again changes nothing and duplicates nothing", () => {
    const before4 = routes(POD, "-4");
    const before6 = routes(POD, "-6");
    configureNetwork(parseNetworkConfig(mainConfig()), { netns: nsPath(POD) });
    assert.deepEqual(addrs(POD, "eth0"), ["10.231.0.2/24", "fd31::2/64"]);
    assert.deepEqual(routes(POD, "-4"), before4);
    assert.deepEqual(routes(POD, "-6"), before6);
    ping(NODE, "10.231.0.2");
  });

  it("precise errors, and nothing changed on a bad request", () => {
    const ns = { netns: nsPath(POD) };
    assert.throws(
      () =>
        configureNetwork(
          parseNetworkConfig({
            interfaces: [
              { mac: "02:de:ad:be:ef:00", name: "eth9" },
              { mac: macD, name: "eth5" },
            ],
          }),
          ns,
        ),
      (e: unknown) => rpcCode(Code.NOT_FOUND)(e) && /02:de:ad:be:ef:00/.test((e as Error).message),
    );
    assert.equal(link(POD, "vethD").ifname, "vethD", "the known NIC of a NOT_FOUND request was not renamed");
    assert.throws(
      () => parseNetworkConfig({ interfaces: [{ mac: macD, name: "eth5", addresses: ["10.0.0.1/99"] }] }),
      rpcCode(Code.INVALID_ARGUMENT),
    );
    // A gateway no route reaches: the kernel's ENETUNREACH, as INVALID_ARGUMENT naming the route.
    assert.throws(
      () =>
        configureNetwork(
          parseNetworkConfig({ routes: [{ dst: "10.250.0.0/16", gateway: "192.0.2.1", dev: "eth0" }] }),
          ns,
        ),
      (e: unknown) =>
        rpcCode(Code.INVALID_ARGUMENT)(e) &&
        /10\.250\.0\.0\/16 via 192\.0\.2\.1 dev eth0: ENETUNREACH/.test((e as Error).message),
    );
    assert.throws(
      () => configureNetwork(parseNetworkConfig({ routes: [{ dst: "10.250.0.0/16", dev: "nosuch0" }] }), ns),
      rpcCode(Code.NOT_FOUND),
    );
  });

  it("swaps names between two NICs of one request", () => {
    configureNetwork(
      parseNetworkConfig({
        interfaces: [
          { mac: macD, name: "eth0", addresses: ["10.233.0.2/24"] },
          // A rename takes the link down, which drops its IPv6 addresses: they are re-added after.
          { mac: macB, name: "eth1", addresses: ["10.231.0.2/24", "fd31::2/64"] },
        ],
      }),
      { netns: nsPath(POD) },
    );
    assert.equal(link(POD, "eth0").address, macD);
    assert.equal(link(POD, "eth1").address, macB);
    assert.ok(link(POD, "eth1").flags.includes("UP"));
    assert.deepEqual(addrs(POD, "eth0"), ["10.233.0.2/24"]);
    assert.deepEqual(addrs(POD, "eth1"), ["10.231.0.2/24", "fd31::2/64"]);
    ping(NODE, "10.233.0.2");
    ping(NODE, "10.231.0.2");
    ping(NODE, "fd31::2");
  });

  it("through the agent: ConfigureNetwork RPC inside the pod namespace (lo, NIC, routes, DNS)", async () => {
    ip(POD, "link", "set", "lo", "down");
    ip(POD, "link", "set", "eth0", "down");
    const dir = mkdtempSync(join(tmpdir(), "cove-agentnet-agent-"));
    const socket = join(dir, "agent.sock");
    let child: ChildProcess | undefined;
    let out = "";
    let client: AgentClient | undefined;
    try {
      child = spawn(
        "nsenter",
        [
          `--net=${nsPath(POD)}`,
          "unshare",
          "--kill-child",
          "--mount",
          "--pid",
          "--fork",
          "--mount-proc",
          process.execPath,
          "--import",
          "tsx",
          join(REPO, "agent", "src", "main.ts"),
          "--listen",
          `unix:${socket}`,
          "--state-dir",
          join(dir, "state"),
        ],
        { cwd: REPO, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, COVE_AGENT_NETWORK: "1" } },
      );
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr!.on("data", (d: Buffer) => {
        out += d.toString();
      });
      const deadline = Date.now() + 30_000;
      while (!out.includes("cove-agent ready")) {
        if (child.exitCode !== null || Date.now() > deadline)
          throw new Error(`agent did not start:\n${out.slice(-4000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      client = await AgentClient.connect(unixDialer(socket));
      await client.createSandbox({ hostname: "pod", dns: ["nameserver 192.0.2.53"] });
      const resolv = join(dir, "state", "sandbox", "resolv.conf");
      assert.equal(readFileSync(resolv, "utf8"), "nameserver 192.0.2.53\n");
      const res = await client.configureNetwork(
        {
          interfaces: [{ mac: macD, name: "net0", mtu: 1300, addresses: ["10.233.0.2/24"] }],
          routes: [{ dst: "10.241.0.0/16", gateway: "10.233.0.1", dev: "net0" }],
          dns: { nameservers: ["10.233.0.53", "fd33::53"], searches: ["cluster.local"], options: [] },
        },
        { timeoutMs: 10_000 },
      );
      assert.deepEqual(
        res.map((r) => [r.mac, r.name]),
        [[macD, "net0"]],
      );
      assert.ok(res[0]!.index > 1);
      const net0 = link(POD, "net0");
      assert.equal(net0.mtu, 1300);
      assert.ok(net0.flags.includes("UP"));
      assert.ok(link(POD, "lo").flags.includes("UP"), "lo brought up by ConfigureNetwork");
      assert.ok(routes(POD, "-4").includes("10.241.0.0/16 via 10.233.0.1 dev net0"));
      assert.equal(readFileSync(resolv, "utf8"), "search cluster.local\nnameserver 10.233.0.53\nnameserver fd33::53\n");
      ping(NODE, "10.233.0.2");
      await assert.rejects(
        client.configureNetwork({ interfaces: [{ mac: "02:de:ad:be:ef:01", name: "x0" }] }),
        rpcCode(Code.NOT_FOUND),
      );
      await assert.rejects(
        client.configureNetwork({ interfaces: [{ mac: macD, name: "net0", addresses: ["10.233.0.2"] }] }),
        (e: unknown) => rpcCode(Code.INVALID_ARGUMENT)(e) && /not a CIDR/.test((e as Error).message),
      );
    } finally {
      client?.close();
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child!.once("exit", r));
        child.kill("SIGKILL");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
