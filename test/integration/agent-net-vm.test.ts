// Pod networking end to end in a real microVM with the real guest image: a CNI bridge pod network
// (in private namespaces), PodNetwork's tap + redirects, our virtio-net device over vhost-user to
// QEMU (TCG), and the agent as PID 1 configuring the guest from PodNetwork.guestConfig() through
// the ConfigureNetwork RPC — no shell, no `ip` in the guest. The node side pings the pod's
// address; a container (sharing the guest's network) pings the gateway and 127.0.0.1 (lo is up
// from CreateSandbox) and sees the pod's DNS in /etc/resolv.conf.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { QemuHypervisor } from "../../src/hypervisor/qemu/qemu.ts";
import type { RunningVm } from "../../src/hypervisor/types.ts";
import { PodNetwork } from "../../src/network/pod-network.ts";
import { AgentClient, vsockDialer } from "../../src/sandbox/agent/index.ts";
import { NetDevice } from "../../src/virtio/net/device.ts";
import { VhostUserBackend } from "../../src/virtio/vhost-user/backend.ts";
import { CniPod, cniUnavailable } from "../harness/cni-pod.ts";
import { vhostUserNetArgs, waitForConsole } from "../harness/qemu-guest.ts";
import { withTimeout } from "../harness/timeout.ts";
import { busyboxErofs, hostAgentSkip, ociSpec, readAll } from "./agent-harness.ts";

const art = guestArtifacts();

function unavailable(): string | undefined {
  const host = hostAgentSkip();
  if (host) return host;
  const why = cniUnavailable();
  if (why) return why;
  if (!existsSync(art.kernel) || !existsSync(art.rootfs))
    return `no guest kernel/image at ${art.kernel}, ${art.rootfs} (run \`npm run guest\`)`;
  return undefined;
}
const skip = unavailable();
if (skip) console.error(`!!! SKIPPED: agent-net-vm: ${skip}`);

function onNode(cni: CniPod, cmd: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", cni.node.name, ...cmd], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const t = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

describe("the agent configures the pod network in the microVM (qemu, virtio-net over vhost-user)", {
  skip: skip && `SKIPPED LOUDLY: ${skip}`,
  timeout: 400_000,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-agent-net-vm-"));
  const bb = join(dir, "bb.erofs");
  let cni: CniPod | undefined;
  let net: PodNetwork | undefined;
  let dev: NetDevice | undefined;
  let vu: VhostUserBackend | undefined;
  let vm: RunningVm | undefined;
  let c: AgentClient | undefined;
  let consoleText = "";

  before(async () => {
    busyboxErofs(bb);
    cni = await CniPod.create("agentvm", "10.250.17");
    net = await PodNetwork.attach({ netns: cni.pod.path });
    const eth0 = net.interfaces[0]!;
    dev = new NetDevice({ hostEnd: eth0.tap, mac: eth0.mac, mtu: eth0.mtu });
    const sock = join(dir, "net.sock");
    vu = new VhostUserBackend(dev, sock, { queues: 2 });
    vu.listen();
    vm = await new QemuHypervisor(chooseAccel(), {
      extraArgs: vhostUserNetArgs(sock, eth0.mac, eth0.mtu),
    }).start({
      id: "agent-net-vm",
      kernel: art.kernel,
      cmdline: guestCmdline({ quiet: true }),
      memoryMiB: 512,
      vcpus: 1,
      disks: [
        { id: "root", path: art.rootfs, readOnly: true },
        { id: "bb", path: bb, readOnly: true },
      ],
      vsock: { guestCid: 3, hybridSocket: join(dir, "hybrid.vsock") },
      workDir: join(dir, "vm"),
    });
    vm.console.on("data", (d: Buffer) => {
      consoleText += d.toString();
    });
    const deadline = Date.now() + 180_000;
    await waitForConsole(() => consoleText, "cove-agent ready", deadline, "guest did not become ready:");
    c = await AgentClient.connect(vsockDialer((port) => vm!.connectVsock(port, 10_000)));
  });

  after(async () => {
    try {
      c?.close();
      if (vm) await vm.kill();
      vu?.close();
      dev?.reset();
      await net?.detach();
    } finally {
      await cni?.remove();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("CreateSandbox, then ConfigureNetwork from guestConfig(): the node pings the pod's address", async () => {
    await withTimeout(
      c!.createSandbox({
        hostname: "netpod",
        storages: [{ id: "bb", source: "serial:bb", fstype: "erofs", options: ["ro"] }],
      }),
      60_000,
      "CreateSandbox",
    );
    const cfg = net!.guestConfig({
      nameservers: ["10.250.17.53"],
      searches: ["pod.cluster.local"],
      options: ["ndots:2"],
    });
    const t0 = process.hrtime.bigint();
    const res = await withTimeout(c!.configureNetwork(cfg), 60_000, "ConfigureNetwork");
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    console.error(`agent-net-vm: ConfigureNetwork round trip ${ms.toFixed(1)} ms (${chooseAccel().accel})`);
    assert.deepEqual(
      res.map((r) => [r.mac, r.name]),
      [[net!.interfaces[0]!.mac, "eth0"]],
    );
    const r = await onNode(cni!, ["/bin/busybox", "ping", "-c", "3", "-W", "10", cni!.ip]);
    assert.equal(r.code, 0, `ping from the node side failed: ${r.out}\nconsole: ${consoleText.slice(-2000)}`);
    assert.match(r.out, /3 packets received/);
    // Retrying changes nothing and still answers.
    await withTimeout(c!.configureNetwork(cfg), 60_000, "ConfigureNetwork again");
  });

  it("a container shares the configured network: gateway, 127.0.0.1 and the pod's resolv.conf", async () => {
    const spec = ociSpec([
      "/bin/sh",
      "-c",
      `cat /etc/resolv.conf; ping -c 2 -W 10 ${cni!.gateway} && ping -c 1 -W 5 127.0.0.1 && ip -o -4 addr show eth0`,
    ]) as unknown as { mounts: object[]; process: { capabilities: Record<string, string[]> } };
    // busybox ping needs a raw socket.
    for (const set of Object.values(spec.process.capabilities)) set.push("CAP_NET_RAW");
    // As CRI: the sandbox's resolv.conf bind (a host path the agent maps to its own file).
    spec.mounts.push({
      destination: "/etc/resolv.conf",
      type: "bind",
      source: "/var/lib/containerd/sandboxes/x/resolv.conf",
      options: ["rbind", "ro"],
    });
    await c!.createContainer({
      container_id: "n1",
      spec,
      rootfs: { lower: ["bb"] },
      stdio: { stdout: true, stderr: true },
    });
    const out = readAll(await c!.openStdio("n1", "", "stdout"));
    const err = readAll(await c!.openStdio("n1", "", "stderr"));
    await c!.startContainer("n1");
    const w = await withTimeout(c!.waitProcess("n1"), 120_000, "wait n1");
    const text = (await out).toString();
    assert.equal(w.exit_status, 0, `${text}\n${(await err).toString()}`);
    assert.match(text, /^search pod\.cluster\.local\nnameserver 10\.250\.17\.53\noptions ndots:2\n/);
    assert.match(text, /2 packets received/);
    assert.match(text, /1 packets received/);
    assert.match(text, new RegExp(`inet ${cni!.ip.replaceAll(".", "\\.")}/24`));
    await c!.removeContainer("n1");
  });
});
