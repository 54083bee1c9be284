// Pod networking, host side, end to end without a VM: Debian's CNI bridge + host-local plugins
// set up a "pod" namespace as containerd's CRI plugin would (run inside a private "node"
// namespace, so the bridge and its addresses never touch the real host), PodNetwork wires a tap
// into the pod namespace with tc redirects, and a virtio-net device driven from TypeScript plays
// the guest. Frames must go veth ↔ tap both ways; teardown must leave nothing behind.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { PodNetwork, parseNetRecord, TAP_PREFIX } from "../../src/network/pod-network.ts";
import { NET_STATE_FILE, reapOrphanVm } from "../../src/sandbox/cleanup.ts";
import { vmWorkDir } from "../../src/sandbox/pod.ts";
import { bit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1 } from "../../src/virtio/device.ts";
import { NetDevice } from "../../src/virtio/net/device.ts";
import { VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF } from "../../src/virtio/net/header.ts";
import { CniPod, cniUnavailable, iptablesRules } from "../harness/cni-pod.ts";
import { NetGuest } from "../harness/netguest.ts";
import { arpReply, parseFrame, TestNetns, UdpPeer, udpFrame } from "../harness/testnet.ts";

const GATEWAY = "10.250.9.1";

const skip = cniUnavailable();

describe("pod network wiring: CNI veth ↔ tap with tc redirects", { skip: skip && `SKIPPED LOUDLY: ${skip}` }, () => {
  let cni: CniPod;
  let pod: TestNetns;
  let podIp: string;
  let iptablesBefore: string;

  before(async () => {
    iptablesBefore = iptablesRules();
    cni = await CniPod.create("wire", "10.250.9");
    pod = cni.pod;
    podIp = cni.ip;
  });

  after(async () => {
    await cni?.remove();
    assert.ok(!TestNetns.exists(cni.pod.name) && !TestNetns.exists(cni.node.name), "test namespaces removed");
    assert.equal(iptablesRules(), iptablesBefore, "no iptables rule left behind");
  });

  it("reads the CNI interface, wires a tap to it, and frames go both ways; teardown removes it all", async () => {
    const net = await PodNetwork.attach({ netns: pod.path });
    let dev: NetDevice | undefined;
    let guest: NetGuest | undefined;
    let peer: UdpPeer | undefined;
    try {
      // What the guest will be told.
      assert.equal(net.interfaces.length, 1);
      const eth0 = net.interfaces[0]!;
      assert.equal(eth0.name, "eth0");
      assert.equal(eth0.mac, pod.macOf("eth0"));
      assert.deepEqual(eth0.addresses, [{ family: "inet", address: podIp, prefixLen: 24 }]);
      const cfg = net.guestConfig();
      assert.deepEqual(
        cfg.routes.find((r) => r.dst === "default"),
        { family: "inet", dst: "default", gateway: GATEWAY, dev: "eth0" },
        "the default route CNI installed",
      );
      assert.ok(eth0.tap.name.startsWith(TAP_PREFIX));
      const tapLink = pod.ipJson<{ mtu: number; flags: string[] }[]>("link", "show", "dev", eth0.tap.name)[0];
      assert.equal(tapLink?.mtu, eth0.mtu, "tap MTU follows the interface");

      // The guest: the CNI interface's MAC and IP, behind the tap.
      dev = new NetDevice({ hostEnd: eth0.tap, mac: eth0.mac, mtu: eth0.mtu });
      const features =
        bit(VIRTIO_F_VERSION_1) |
        bit(VIRTIO_F_RING_EVENT_IDX) |
        bit(VIRTIO_NET_F_MAC) |
        bit(VIRTIO_NET_F_MRG_RXBUF) |
        bit(VIRTIO_NET_F_GUEST_CSUM);
      const g = new NetGuest(dev, features);
      guest = g;
      g.post(64, 2048);
      g.onFrame = (_f, p) => {
        if (p.arp && p.arp.op === 1 && p.arp.targetIp === podIp) {
          g.send(arpReply(eth0.mac, podIp, p.arp.senderMac, p.arp.senderIp));
        } else if (p.udp && p.udp.dstIp === podIp && p.udp.dport === 6000) {
          const reply = Buffer.concat([Buffer.from("pong:"), p.udp.payload]);
          g.send(udpFrame(eth0.mac, p.src, podIp, p.udp.srcIp, 6000, p.udp.sport, reply));
        }
      };

      // node → bridge → veth → eth0 ingress → tap → guest, and the reply back the same way.
      peer = await UdpPeer.start(cni.node, GATEWAY, 5000);
      peer.send(podIp, 6000, Buffer.from("hello-pod"));
      const [d] = await peer.waitFor(1, 10_000);
      assert.equal(d!.from, podIp);
      assert.equal(d!.data.toString(), "pong:hello-pod");

      // guest-initiated: the guest sends to the gateway's MAC, learned from the frames it got.
      const fromGw = g.frames.map((f) => parseFrame(f.frame)).find((p) => p.udp?.srcIp === GATEWAY);
      assert.ok(fromGw, "the guest saw the gateway's datagram");
      g.send(udpFrame(eth0.mac, fromGw.src, podIp, GATEWAY, 6001, 5000, Buffer.from("from-guest")));
      const got = await peer.waitFor(2, 10_000);
      assert.equal(got[1]!.data.toString(), "from-guest");
      assert.equal(got[1]!.port, 6001);

      // The frames went through the redirects, not the pod namespace's own stack.
      const stats = JSON.stringify(pod.exec("tc", ["-s", "-j", "filter", "show", "dev", "eth0", "ingress"]));
      assert.match(stats, /mirred/);
      const packets = [...stats.matchAll(/\\"packets\\":(\d+)/g)].map((m) => Number(m[1]));
      assert.ok(
        packets.some((n) => n >= 2),
        `eth0's redirect counted the frames (${packets.join(",")})`,
      );
      assert.equal(dev.needsReset, undefined);
    } finally {
      peer?.stop();
      guest?.stop();
      dev?.reset();
      await net.detach();
    }

    // Nothing of ours is left in the pod namespace; CNI's veth is untouched.
    const links = pod.ipJson<{ ifname: string }[]>("link", "show").map((l) => l.ifname);
    assert.ok(!links.some((n) => n.startsWith(TAP_PREFIX)), `no tap left (${links.join(",")})`);
    assert.ok(links.includes("eth0"), "the CNI interface stays");
    const qdiscs = JSON.parse(pod.exec("tc", ["-j", "qdisc", "show", "dev", "eth0"]) || "[]") as { kind: string }[];
    assert.ok(!qdiscs.some((q) => q.kind === "ingress"), "no ingress qdisc left on eth0");
    const filters = pod.exec("tc", ["-j", "filter", "show", "dev", "eth0", "ingress"]).trim();
    assert.ok(filters === "" || filters === "[]", `no filter left (${filters})`);
    await net.detach(); // idempotent
  });

  it("refuses an interface whose ingress qdisc belongs to someone else, and cleans up its own tap", async () => {
    pod.exec("tc", ["qdisc", "add", "dev", "eth0", "ingress"]);
    try {
      await assert.rejects(PodNetwork.attach({ netns: pod.path }), /already has an ingress qdisc/);
      const links = pod.ipJson<{ ifname: string }[]>("link", "show").map((l) => l.ifname);
      assert.ok(!links.some((n) => n.startsWith(TAP_PREFIX)), "the tap made before the failure is gone");
      const qdiscs = JSON.parse(pod.exec("tc", ["-j", "qdisc", "show", "dev", "eth0"]) || "[]") as { kind: string }[];
      assert.ok(
        qdiscs.some((q) => q.kind === "ingress"),
        "the other owner's qdisc was left alone",
      );
    } finally {
      pod.exec("tc", ["qdisc", "del", "dev", "eth0", "ingress"]);
    }
  });
  it("delete after a shim SIGKILL removes the tc redirect the dead shim left on eth0 (from net.json)", async () => {
    const ingressOnEth0 = () =>
      (JSON.parse(pod.exec("tc", ["-j", "qdisc", "show", "dev", "eth0"]) || "[]") as { kind: string }[]).some(
        (q) => q.kind === "ingress",
      );
    const bundle = `/run/cove-test/net-wiring-${process.pid}/bundle`;
    const dir = vmWorkDir(bundle);
    const warnings: string[] = [];
    const warn = (m: string) => void warnings.push(m);
    const net = await PodNetwork.attach({ netns: pod.path });
    try {
      const rec = net.record();
      assert.deepEqual(parseNetRecord(JSON.parse(JSON.stringify(rec))), rec, "the record survives JSON");
      assert.deepEqual(
        rec.interfaces.map((i) => i.name),
        ["eth0"],
      );
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(dir, NET_STATE_FILE), JSON.stringify(rec));
      // The shim dies: its tap fds close (the taps vanish), nothing else runs.
      for (const i of net.interfaces) i.tap.close();
      assert.ok(ingressOnEth0(), "the dead shim's ingress qdisc is still on eth0");

      const r = await reapOrphanVm(bundle, warn);
      assert.equal(r.network, true);
      assert.equal(r.killed, undefined, "no VMM pid was recorded");
      assert.ok(!ingressOnEth0(), "delete removed the ingress qdisc (and its redirect filter)");
      const filters = pod.exec("tc", ["-j", "filter", "show", "dev", "eth0", "ingress"]).trim();
      assert.ok(filters === "" || filters === "[]", `no filter left (${filters})`);
      const links = pod.ipJson<{ ifname: string }[]>("link", "show").map((l) => l.ifname);
      assert.ok(links.includes("eth0") && !links.some((n) => n.startsWith(TAP_PREFIX)), links.join(","));
      assert.ok(!existsSync(dir), "the VM state dir is gone");
      assert.deepEqual(warnings, []);
      // Idempotent: a second delete finds nothing to do.
      assert.deepEqual(await reapOrphanVm(bundle, warn), { killed: undefined, network: false });
      // And undoing the record again (the dir had survived) is harmless too.
      assert.deepEqual(await PodNetwork.undoRecorded(rec), []);
    } finally {
      await net.detach();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("delete tolerates a namespace CNI already deleted, and refuses a malformed record", async () => {
    const bundle = `/run/cove-test/net-wiring-gone-${process.pid}/bundle`;
    const dir = vmWorkDir(bundle);
    const warnings: string[] = [];
    const warn = (m: string) => void warnings.push(m);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const gone = {
        netns: `/var/run/netns/cove-test-gone-${process.pid}`,
        interfaces: [{ name: "eth0", tap: `${TAP_PREFIX}0` }],
      };
      assert.ok(!existsSync(gone.netns));
      writeFileSync(join(dir, NET_STATE_FILE), JSON.stringify(gone));
      assert.equal((await reapOrphanVm(bundle, warn)).network, true);
      assert.deepEqual(warnings, [], "a vanished namespace is not an error");
      assert.ok(!existsSync(dir));

      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(
        join(dir, NET_STATE_FILE),
        JSON.stringify({ netns: gone.netns, interfaces: [{ name: "eth0; reboot", tap: "x" }] }),
      );
      assert.equal((await reapOrphanVm(bundle, warn)).network, false);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /bad interface/);
      assert.ok(!existsSync(dir), "the dir is removed even so");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
