// Pod networking through CRI with real CNI: containerd's CRI plugin runs Debian's bridge +
// host-local + portmap plugins (a private bridge and subnet made by this test), and cove attaches
// each pod's microVM to the pod's network namespace (tap + tc redirects, virtio-net over
// vhost-user, ConfigureNetwork in the guest). Checked: the pod's IP in PodSandboxStatus and in
// the guest, DNS from the pod config, host → pod TCP, pod → host side of the bridge, pod → pod,
// a hostPort mapping, and that teardown leaves no tap, netns, veth or iptables rule behind.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer, get, type Server } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import {
  CNI_BIN_DIR,
  hostLinks,
  iptablesRules,
  netnsNames,
  removeBridge,
  writeBridgeConflist,
} from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd, containerdUnderTest, REPO_ROOT } from "../harness/containerd.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { processesWithArg, processesWithCwdUnder, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const BRIDGE = "cove-net0";
const PREFIX = "10.231.41";
const HOST_IP = `${PREFIX}.1`;
const HOST_PORT = 18941;
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
  { path: join(CNI_BIN_DIR, "portmap"), why: "CNI plugins (containernetworking-plugins)" },
  { path: "/usr/sbin/iptables-save", why: "iptables" },
]);

const qemus = (dir: string) => processesWithCwdUnder(dir).filter((p) => /qemu-system/.test(p.argv[0] ?? ""));

/** GET http://host:port/ with a deadline; the body. */
function fetchText(host: string, port: number, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port, path: "/", timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve(body));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${host}:${port} timed out`)));
    req.on("error", reject);
  });
}

/** The netns path CRI gave the sandbox (verbose PodSandboxStatus → runtimeSpec). */
async function netnsPathOf(cri: CriClient, podId: string): Promise<string> {
  const r = await cri.call<{ info: Record<string, string> }>("runtime", "PodSandboxStatus", {
    pod_sandbox_id: podId,
    verbose: true,
  });
  const info = JSON.parse(r.info.info ?? "{}") as {
    runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } };
  };
  const p = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === "network")?.path;
  assert.ok(p, `the sandbox has a network namespace path: ${JSON.stringify(info).slice(0, 400)}`);
  return p;
}

/** An HTTP/1.0 GET by busybox nc (Debian's static busybox wget segfaults resolving). */
const httpGet = (host: string, port: number) =>
  `printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 10 ${host} ${port}`;

const inNetns = (path: string, ...cmd: string[]) =>
  execFileSync("nsenter", [`--net=${path}`, ...cmd], { encoding: "utf8", timeout: 10_000 });

/** Rules that are new since `before`, except portmap's shared top-level chains (kept for every
 * pod on the node, as under runc; they hold no per-pod rule). */
function newRules(before: string[], now: string[]): string[] {
  const had = new Set(before);
  return now.filter(
    (l) =>
      !had.has(l) &&
      !/^:CNI-HOSTPORT-(DNAT|SETMARK|MASQ) /.test(l) &&
      !(/-j CNI-HOSTPORT-(DNAT|SETMARK|MASQ)$/.test(l) && !l.includes(PREFIX)) &&
      !/^-A CNI-HOSTPORT-(SETMARK|MASQ) /.test(l),
  );
}

describe(`pod networking: real CNI through CRI, one microVM per pod (containerd ${containerdUnderTest()})`, {
  skip,
  timeout: 400_000,
}, () => {
  let cd: Containerd;
  let cri: CriClient;
  let dir: string;
  let hostServer: Server | undefined;
  let rulesBefore: { nat: string[]; filter: string[] };
  let netnsBefore: string[];
  const pods: string[] = [];

  before(async () => {
    dir = mkdtempSync("/tmp/cove-e2e-net-");
    rulesBefore = { nat: iptablesRules("nat"), filter: iptablesRules("filter") };
    netnsBefore = netnsNames();
    const conf = join(dir, "cni-conf");
    writeBridgeConflist(conf, dir, {
      name: "cove-e2e-net",
      bridge: BRIDGE,
      prefix: PREFIX,
      gateway: true,
      portmap: true,
    });
    const configPath = join(dir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(dir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n\n[pod]\nwritable_layer_mib = 32\n`,
    );
    cd = await Containerd.start({
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
      cniConfDir: conf,
      cniBinDir: CNI_BIN_DIR,
    });
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, await buildImage(busyboxImage(), images), "k8s.io");
    cri = new CriClient(cd.address);
  });

  after(async () => {
    hostServer?.close();
    for (const p of pods.splice(0)) {
      await cri?.stopPodSandbox(p).catch(() => undefined);
      await cri?.removePodSandbox(p).catch(() => undefined);
    }
    cri?.close();
    // COVE_TEST_LOG=<file>: keep containerd's log (with the shims' stderr) for a failed run.
    if (process.env.COVE_TEST_LOG && cd) writeFileSync(process.env.COVE_TEST_LOG, cd.log());
    await cd?.stop();
    removeBridge(BRIDGE);
    if (dir) execFileSync("rm", ["-rf", dir]);
  });

  const podConfig = (name: string, extra: Record<string, unknown> = {}): PodSandboxConfig =>
    ({
      metadata: { name, uid: `${name}-${Date.now()}`, namespace: "default", attempt: 0 },
      hostname: name,
      log_directory: join(dir, `${name}-logs`),
      linux: {},
      ...extra,
    }) as PodSandboxConfig;

  const run = async (podId: string, pod: PodSandboxConfig, name: string, script: string) => {
    const id = await cri.createContainer(
      podId,
      {
        metadata: { name },
        image: { image: BUSYBOX_IMAGE_REF },
        command: ["/bin/sh", "-c", script],
        log_path: `${name}.log`,
      },
      pod,
    );
    await cri.startContainer(id);
    return id;
  };

  const podIp = async (podId: string) => {
    const s = (await cri.podSandboxStatus(podId)) as unknown as { status: { network?: { ip?: string } } };
    return s.status.network?.ip ?? "";
  };

  test("pods get their CNI address in the guest; host, bridge, pod-to-pod and hostPort traffic flows", async () => {
    const podA = podConfig("net-a", {
      dns_config: { servers: [`${PREFIX}.53`], searches: ["cove.test"], options: ["ndots:2"] },
      port_mappings: [{ protocol: 0, container_port: 8080, host_port: HOST_PORT }],
    });
    const a = await cri.runPodSandbox(podA, "cove");
    pods.push(a);
    const ipA = await podIp(a);
    assert.match(ipA, new RegExp(`^${PREFIX.replaceAll(".", "\\.")}\\.\\d+$`), "PodSandboxStatus has the pod's IP");
    assert.match(cd.log(), /pod network: eth0 /, "the shim attached the pod network");

    // The wiring in the pod's namespace: a tap, and eth0's ingress redirected to it.
    const nsA = await netnsPathOf(cri, a);
    assert.match(inNetns(nsA, "ip", "-o", "link", "show"), /covetap0/);
    assert.match(inNetns(nsA, "tc", "filter", "show", "dev", "eth0", "ingress"), /mirred.*covetap0/s);

    const web = await run(
      a,
      podA,
      "web",
      "mkdir -p /www && echo pod-a > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    const addr = await cri.execSync(web, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert.match(addr.stdout.toString(), new RegExp(`inet ${ipA.replaceAll(".", "\\.")}/24`), "the guest has the IP");
    const resolv = (await cri.execSync(web, ["cat", "/etc/resolv.conf"])).stdout.toString();
    assert.match(resolv, new RegExp(`nameserver ${PREFIX.replaceAll(".", "\\.")}\\.53`), resolv);
    assert.match(resolv, /search cove\.test/);

    // Host → pod: the container's TCP server on the pod IP.
    const body = await waitFor(
      "httpd in the pod to answer",
      () => fetchText(ipA, 8080, 3000).catch(() => undefined),
      60_000,
      500,
    );
    assert.equal(body, "pod-a\n");

    // Pod → host side of the bridge.
    hostServer = createServer((_req, res) => res.end("host-side\n"));
    await new Promise<void>((r, j) => {
      hostServer!.once("error", j);
      hostServer!.listen(0, HOST_IP, r);
    });
    const hostPort = (hostServer.address() as { port: number }).port;
    const up = await cri.execSync(web, ["sh", "-c", httpGet(HOST_IP, hostPort)]);
    assert.equal(up.exit_code, 0, up.stderr.toString());
    assert.match(up.stdout.toString(), /\r\n\r\nhost-side\n$/);

    // hostPort: portmap DNATs the host's own address (OUTPUT chain) to the pod.
    assert.equal(await fetchText(HOST_IP, HOST_PORT), "pod-a\n", "hostPort on the bridge's host address");

    // A second pod (its own VM) reaches the first.
    const podB = podConfig("net-b");
    const b = await cri.runPodSandbox(podB, "cove");
    pods.push(b);
    const ipB = await podIp(b);
    assert.notEqual(ipB, ipA);
    assert.equal(qemus(cd.dir).length, 2, "one VM per pod");
    const client = await run(b, podB, "client", "exec sleep 100000");
    const across = await cri.execSync(client, ["sh", "-c", httpGet(ipA, 8080)]);
    assert.equal(across.exit_code, 0, across.stderr.toString());
    assert.match(across.stdout.toString(), /^HTTP\/1\.[01] 200 .*\r\n\r\npod-a\n$/s);
    const ping = await cri.execSync(web, ["ping", "-c", "2", "-W", "5", ipB]);
    assert.equal(ping.exit_code, 0, `pod A pings pod B: ${ping.stdout.toString()}`);
  });

  test("teardown leaves no tap, qdisc, netns, veth or iptables rule behind", async () => {
    const paths = await Promise.all(pods.map((p) => netnsPathOf(cri, p)));
    for (const p of pods.splice(0)) {
      await cri.stopPodSandbox(p);
      await cri.removePodSandbox(p);
    }
    await waitFor(
      "the pods' shims and VMs to go",
      () => processesWithArg(cd.address).length === 0 && qemus(cd.dir).length === 0,
      30_000,
    );
    const log = cd.log();
    assert.equal((log.match(/pod network detached/g) ?? []).length, 2, "each pod detached its network");
    assert.doesNotMatch(log, /tc teardown failed/);
    for (const p of paths) assert.equal(existsSync(p), false, `${p} is gone`);
    assert.deepEqual(
      netnsNames().filter((n) => !netnsBefore.includes(n)),
      [],
      "no network namespace left",
    );
    assert.deepEqual(
      hostLinks().filter((l) => l.startsWith("covetap")),
      [],
      "no tap in the host namespace",
    );
    const onBridge = execFileSync("ip", ["-o", "link", "show", "master", BRIDGE], { encoding: "utf8" });
    assert.equal(onBridge.trim(), "", "no veth left on the bridge");
    assert.deepEqual(newRules(rulesBefore.nat, iptablesRules("nat")), [], "no per-pod nat rule left");
    assert.deepEqual(newRules(rulesBefore.filter, iptablesRules("filter")), [], "no filter rule left");
  });
});
