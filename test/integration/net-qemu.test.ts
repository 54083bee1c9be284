// A real Linux guest with our virtio-net device: the pod network comes from the CNI bridge
// plugin (in private namespaces), PodNetwork wires a tap into the pod namespace, and the device
// is served to QEMU (qemu backend, TCG here) over vhost-user. The guest takes the CNI
// interface's MAC and address; the node side of the bridge pings it, and it pings the gateway
// and moves a TCP stream both ways.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { QemuHypervisor } from "../../src/hypervisor/qemu/qemu.ts";
import type { RunningVm } from "../../src/hypervisor/types.ts";
import { PodNetwork } from "../../src/network/pod-network.ts";
import { NetDevice } from "../../src/virtio/net/device.ts";
import { VhostUserBackend } from "../../src/virtio/vhost-user/backend.ts";
import { CniPod, cniUnavailable } from "../harness/cni-pod.ts";
import { retryUntil, vhostUserNetArgs, waitForConsole } from "../harness/qemu-guest.ts";
import { sh } from "../harness/testnet.ts";
import { withTimeout } from "../harness/timeout.ts";
import { buildTestRoot, CMD_PORT } from "./virtio-guest-root.ts";

const kernel = process.env.COVE_TEST_KERNEL ?? guestArtifacts().kernel;

function unavailable(): string | undefined {
  const why = cniUnavailable();
  if (why) return why;
  if (!existsSync(kernel)) return `no guest kernel at ${kernel} (run \`npm run guest\`, or set COVE_TEST_KERNEL)`;
  if (!existsSync("/bin/busybox")) return "busybox-static is not installed (the node side pings with it)";
  return undefined;
}
const skip = unavailable();
if (skip) console.error(`!!! SKIPPED: ${skip}`);

/** Reads stdin, sends it over TCP, half-closes, and prints the reply (run in the node namespace). */
const TCP_SEND = `
const chunks = [];
process.stdin.on("data", (d) => chunks.push(d));
process.stdin.on("end", () => {
  const [host, port] = process.argv.slice(1);
  const s = require("node:net").connect(Number(port), host, () => s.end(Buffer.concat(chunks)));
  s.pipe(process.stdout);
  s.on("error", (e) => { console.error(String(e)); process.exit(1); });
});
`;

/** Accepts one TCP connection and prints the sha256 and length of what it received. */
const TCP_SINK = `
const [host, port] = process.argv.slice(1);
const h = require("node:crypto").createHash("sha256");
let n = 0;
const srv = require("node:net").createServer((c) => {
  c.on("data", (d) => { h.update(d); n += d.length; });
  c.on("end", () => { console.log(h.digest("hex") + " " + n); srv.close(); });
});
srv.listen(Number(port), host, () => console.log("LISTENING"));
setTimeout(() => process.exit(3), 120000).unref();
`;

function exchange(s: Duplex, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    s.on("data", (d: Buffer) => out.push(d));
    s.on("error", reject);
    s.on("end", () => resolve(Buffer.concat(out).toString()));
    s.end(input);
  });
}

describe("a guest on qemu with our virtio-net over vhost-user, on a CNI pod network", {
  skip: skip && `SKIPPED LOUDLY: ${skip}`,
  timeout: 300_000,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-net-qemu-"));
  let cni: CniPod | undefined;
  let net: PodNetwork | undefined;
  let dev: NetDevice | undefined;
  let vu: VhostUserBackend | undefined;
  let root: { image: string; cleanup: () => void } | undefined;
  let vm: RunningVm | undefined;
  let consoleText = "";

  async function guestSh(script: string, ms = 60_000): Promise<string> {
    const s = await vm!.connectVsock(CMD_PORT, 10_000);
    return withTimeout(exchange(s, `${script}\n`), ms, `guest: ${script}`);
  }

  /** Runs a command in the node namespace (the host side of the bridge). */
  function onNode(cmd: string[], input?: Buffer): Promise<{ code: number | null; out: Buffer; err: string }> {
    return new Promise((resolve) => {
      const child = spawn("ip", ["netns", "exec", cni!.node.name, ...cmd], { stdio: ["pipe", "pipe", "pipe"] });
      const out: Buffer[] = [];
      let err = "";
      child.stdout.on("data", (d: Buffer) => out.push(d));
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      const t = setTimeout(() => child.kill("SIGKILL"), 120_000);
      child.on("exit", (code) => {
        clearTimeout(t);
        resolve({ code, out: Buffer.concat(out), err });
      });
      child.stdin.end(input ?? Buffer.alloc(0));
    });
  }

  before(async () => {
    cni = await CniPod.create("qemu", "10.250.13");
    net = await PodNetwork.attach({ netns: cni.pod.path });
    const eth0 = net.interfaces[0]!;
    dev = new NetDevice({ hostEnd: eth0.tap, mac: eth0.mac, mtu: eth0.mtu });
    const sock = join(dir, "net.sock");
    vu = new VhostUserBackend(dev, sock, { queues: 2 });
    vu.listen();
    // What the agent will do from the GuestNetworkConfig: the interface's address and routes.
    const cfg = net.guestConfig();
    const addr = cfg.interfaces[0]!.addresses[0]!;
    root = buildTestRoot({
      initLines: [
        "ip link set dev eth0 up",
        `ip addr add ${addr} dev eth0`,
        ...cfg.routes.map((r) => `ip route add ${r.dst}${r.gateway ? ` via ${r.gateway}` : ""} dev eth0`),
        "socat -t 600 TCP-LISTEN:7000,fork,reuseaddr EXEC:sha256sum &",
      ],
    });
    vm = await new QemuHypervisor(chooseAccel(), {
      extraArgs: vhostUserNetArgs(sock, eth0.mac, eth0.mtu),
    }).start({
      id: "net-test",
      kernel,
      cmdline: guestCmdline(),
      memoryMiB: 512,
      vcpus: 1,
      disks: [{ id: "root", path: root.image, readOnly: true }],
      vsock: { guestCid: 3 },
      workDir: join(dir, "vm"),
    });
    vm.console.on("data", (d: Buffer) => {
      consoleText += d.toString();
    });
    const deadline = Date.now() + 150_000;
    await waitForConsole(() => consoleText, "COVE-TEST-GUEST-READY", deadline, "guest did not boot; console:");
    await retryUntil(async () => assert.match(await guestSh("echo up"), /up/), deadline);
  });

  after(async () => {
    try {
      if (vm) await vm.kill();
      vu?.close();
      dev?.reset();
      await net?.detach();
    } finally {
      await cni?.remove();
      root?.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the guest has the CNI interface's MAC and address", async () => {
    const out = await guestSh("ip -o link show eth0; ip -o -4 addr show eth0; ip route");
    assert.match(out, new RegExp(net!.interfaces[0]!.mac));
    assert.match(out, new RegExp(`inet ${cni!.ip.replaceAll(".", "\\.")}/24`));
    assert.match(out, new RegExp(`default via ${cni!.gateway.replaceAll(".", "\\.")}`));
  });

  it("the node side of the bridge pings the guest, and the guest pings the gateway", async () => {
    const r = await onNode(["/bin/busybox", "ping", "-c", "3", "-W", "10", cni!.ip]);
    if (r.code !== 0) {
      const diag = await guestSh("ip -s link show eth0; cat /proc/net/dev; dmesg | grep -i virtio | tail -5");
      assert.fail(
        `ping from the node failed: ${r.out} ${r.err}\nguest: ${diag}\ndevice: ${JSON.stringify(dev!.metrics)} ${dev!.needsReset ?? ""}`,
      );
    }
    assert.match(r.out.toString(), /3 packets received/);
    const g = await guestSh(`ping -c 2 -W 10 ${cni!.gateway}`);
    assert.match(g, /2 packets received/);
    assert.ok(dev!.metrics.rxFrames >= 3 && dev!.metrics.txFrames >= 3);
    assert.equal(dev!.needsReset, undefined);
  });

  it("moves a TCP stream node → guest with a matching checksum (and reports its rate)", async () => {
    const data = randomBytes(8 << 20);
    const t0 = process.hrtime.bigint();
    const r = await onNode([process.execPath, "-e", TCP_SEND, cni!.ip, "7000"], data);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(r.code, 0, r.err);
    assert.match(r.out.toString(), new RegExp(createHash("sha256").update(data).digest("hex")));
    console.error(
      `net-qemu: 8 MiB node → guest over TCP in ${ms.toFixed(0)} ms (${((8 * 8) / (ms / 1000)).toFixed(1)} Mbit/s, ${chooseAccel().accel})`,
    );
    console.error(`net-qemu: device metrics ${JSON.stringify(dev!.metrics)}`);
  });

  it("moves a TCP stream guest → node (GSO frames from the guest through the tap)", async () => {
    const sink = spawn("ip", ["netns", "exec", cni!.node.name, process.execPath, "-e", TCP_SINK, cni!.gateway, "7001"]);
    let out = "";
    sink.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    try {
      const deadline = Date.now() + 10_000;
      while (!out.includes("LISTENING") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const tx0 = dev!.metrics.txFrames;
      const txBytes0 = dev!.metrics.txBytes;
      const g = await guestSh(
        [
          "dd if=/dev/urandom of=/tmp/x bs=1M count=8 2>/dev/null",
          "sha256sum /tmp/x",
          `socat -u FILE:/tmp/x TCP:${cni!.gateway}:7001 && echo SENT`,
        ].join("\n"),
        120_000,
      );
      assert.match(g, /SENT/);
      const sum = /^([0-9a-f]{64})\s/m.exec(g)?.[1];
      while (!/[0-9a-f]{64} \d+/.test(out) && Date.now() < deadline + 60_000) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(out.match(/([0-9a-f]{64}) (\d+)/)?.[1], sum, "node received what the guest sent");
      assert.match(out, / 8388608/);
      const frames = dev!.metrics.txFrames - tx0;
      const bytes = dev!.metrics.txBytes - txBytes0;
      console.error(
        `net-qemu: guest → node ${bytes} bytes in ${frames} tx frames (${(bytes / frames).toFixed(0)} B/frame)`,
      );
      assert.ok(bytes >= 8 << 20);
    } finally {
      sink.kill();
    }
  });

  it("teardown leaves no tap or qdisc in the pod namespace", async () => {
    await vm!.kill();
    vm = undefined;
    vu!.close();
    vu = undefined;
    dev!.reset();
    await net!.detach();
    const links = sh("ip", ["-j", "-n", cni!.pod.name, "link", "show"]);
    assert.doesNotMatch(links, /covetap/);
    const q = sh("ip", ["netns", "exec", cni!.pod.name, "tc", "-j", "qdisc", "show", "dev", "eth0"]);
    assert.doesNotMatch(q, /ingress/);
  });
});
