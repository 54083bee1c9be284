// Pod networking, side by side in one run: a cove pod (microVM: tap + tc redirect + our virtio-net
// over vhost-user) and a runc pod, both on the same CNI bridge (bridge + host-local) through CRI.
// Measured from the host: TCP round trips/s (1-byte request/response on one connection to a
// busybox `nc -e cat` echo in the pod), bulk throughput host→pod (into `nc -l > /dev/null`) and
// pod→host (`dd | nc` from the pod to a host listener on the bridge). Writes bench-results/net.json.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { waitFor } from "../harness/processes.ts";
import { withTimeout } from "../harness/timeout.ts";

const BRIDGE = "cove-nb0";
const PREFIX = "10.231.43";
const HOST_IP = `${PREFIX}.1`;
const RTT_SECONDS = Number(process.env.COVE_BENCH_RTT_SECONDS ?? 5);
const BULK_MIB = Number(process.env.COVE_BENCH_BULK_MIB ?? 64);
const art = guestArtifacts();

function open(host: string, port: number): Promise<Socket> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = connect({ host, port }, () => resolve(s));
      s.once("error", reject);
    }),
    5000,
    `connect ${host}:${port}`,
  );
}

/** 1-byte ping-pong over one connection for `seconds`: round trips per second. */
async function roundTrips(host: string, port: number, seconds: number): Promise<number> {
  const s = await open(host, port);
  s.setNoDelay(true);
  let n = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      s.on("error", reject);
      s.on("data", () => {
        n++;
        if (performance.now() < end) s.write("x");
        else resolve();
      });
      s.write("x");
    }),
    seconds * 1000 + 15_000,
    "round trips",
  );
  const rate = n / ((performance.now() - t0) / 1000);
  s.destroy();
  return rate;
}

/** Host → pod: BULK_MIB written to a sink in the pod; Mbit/s until the pod closes the connection. */
async function bulkToPod(host: string, port: number): Promise<number> {
  const s = await open(host, port);
  const chunk = Buffer.alloc(256 * 1024);
  const t0 = performance.now();
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      s.on("error", reject);
      s.on("close", () => resolve());
      let left = (BULK_MIB * 1024 * 1024) / chunk.length;
      const pump = () => {
        while (left > 0) {
          left--;
          if (!s.write(chunk)) return void s.once("drain", pump);
        }
        s.end();
      };
      pump();
    }),
    300_000,
    "bulk host→pod",
  );
  return (BULK_MIB * 8 * 1024 * 1024) / ((performance.now() - t0) / 1000) / 1e6;
}

/** Pod → host: the pod sends BULK_MIB to a listener on the bridge; Mbit/s from first byte to end. */
async function bulkFromPod(cri: CriClient, ctr: string): Promise<number> {
  let bytes = 0;
  let first = 0;
  let last = 0;
  const server = createServer((c) => {
    c.on("data", (d: Buffer) => {
      if (!first) first = performance.now();
      bytes += d.length;
      last = performance.now();
    });
  });
  await new Promise<void>((r) => server.listen(0, HOST_IP, r));
  const port = (server.address() as { port: number }).port;
  try {
    const r = await cri.execSync(
      ctr,
      ["sh", "-c", `dd if=/dev/zero bs=65536 count=${BULK_MIB * 16} 2>/dev/null | nc -w 10 ${HOST_IP} ${port}`],
      300,
    );
    if (r.exit_code !== 0) throw new Error(`dd | nc failed: ${r.stderr.toString()}`);
    await waitFor("all bytes at the host", () => bytes >= BULK_MIB * 1024 * 1024, 30_000, 50);
  } finally {
    server.close();
  }
  return (bytes * 8) / ((last - first) / 1000) / 1e6;
}

async function main() {
  const dir = mkdtempSync("/tmp/cove-bench-net-");
  const conf = join(dir, "cni-conf");
  writeBridgeConflist(conf, dir, { name: "cove-bench-net", bridge: BRIDGE, prefix: PREFIX, gateway: true });
  const configPath = join(dir, "cove.toml");
  writeFileSync(
    configPath,
    `cache_dir = "${join(dir, "cache")}"\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n[pod]\nwritable_layer_mib = 32\n`,
  );
  const cd = await Containerd.start({
    criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
    cniConfDir: conf,
    cniBinDir: CNI_BIN_DIR,
  });
  const cri = new CriClient(cd.address);
  const pods: string[] = [];
  const rows: { runtime: string; rtt_per_s: number; host_to_pod_mbit: number; pod_to_host_mbit: number }[] = [];
  try {
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, await buildImage(busyboxImage(), images), "k8s.io");
    for (const [runtime, handler] of [
      ["runc", ""],
      ["cove", "cove"],
    ] as const) {
      const pod: PodSandboxConfig = {
        metadata: { name: `bench-${runtime}`, uid: `bench-${runtime}-${Date.now()}`, namespace: "default", attempt: 0 },
        hostname: `bench-${runtime}`,
        log_directory: join(dir, `${runtime}-logs`),
        linux: {},
      };
      const id = await cri.runPodSandbox(pod, handler);
      pods.push(id);
      const ip = ((await cri.podSandboxStatus(id)) as unknown as { status: { network: { ip: string } } }).status.network
        .ip;
      const ctr = async (name: string, script: string) => {
        const c = await cri.createContainer(
          id,
          { metadata: { name }, image: { image: BUSYBOX_IMAGE_REF }, command: ["/bin/sh", "-c", script] },
          pod,
        );
        await cri.startContainer(c);
        return c;
      };
      const echo = await ctr("echo", "exec nc -ll -p 9000 -e cat");
      // stdin that never ends: busybox nc would otherwise close at its stdin EOF, not at ours.
      await ctr("sink", "sleep 100000 | nc -l -p 9001 > /dev/null");
      await waitFor(
        "the echo server",
        () =>
          open(ip, 9000)
            .then((s) => {
              s.destroy();
              return true;
            })
            .catch(() => false),
        60_000,
        500,
      );
      await roundTrips(ip, 9000, 1); // warm-up
      const rtt = await roundTrips(ip, 9000, RTT_SECONDS);
      const up = await bulkToPod(ip, 9001);
      const down = await bulkFromPod(cri, echo);
      rows.push({
        runtime,
        rtt_per_s: Math.round(rtt),
        host_to_pod_mbit: Math.round(up),
        pod_to_host_mbit: Math.round(down),
      });
      console.log(
        `${runtime}: ${Math.round(rtt)} round trips/s, host→pod ${Math.round(up)} Mbit/s, pod→host ${Math.round(down)} Mbit/s`,
      );
    }
  } finally {
    for (const p of pods) {
      await cri.stopPodSandbox(p).catch(() => undefined);
      await cri.removePodSandbox(p).catch(() => undefined);
    }
    cri.close();
    await cd.stop();
    removeBridge(BRIDGE);
    execFileSync("rm", ["-rf", dir]);
  }
  const [runc, cove] = rows;
  console.log(`\nTCP pod↔host on one CNI bridge (bulk ${BULK_MIB} MiB, round trips over ${RTT_SECONDS} s)`);
  console.log("| runtime | round trips/s | host→pod Mbit/s | pod→host Mbit/s |");
  console.log("| ------- | ------------- | --------------- | --------------- |");
  for (const r of rows)
    console.log(`| ${r.runtime} | ${r.rtt_per_s} | ${r.host_to_pod_mbit} | ${r.pod_to_host_mbit} |`);
  if (runc && cove) {
    const ratio = (a: number, b: number) => (b ? (a / b).toFixed(3) : "n/a");
    console.log(
      `| cove/runc | ${ratio(cove.rtt_per_s, runc.rtt_per_s)} | ${ratio(cove.host_to_pod_mbit, runc.host_to_pod_mbit)} | ${ratio(cove.pod_to_host_mbit, runc.pod_to_host_mbit)} |`,
    );
  }
  mkdirSync("bench-results", { recursive: true });
  writeFileSync(
    "bench-results/net.json",
    `${JSON.stringify({ bulkMiB: BULK_MIB, rttSeconds: RTT_SECONDS, rows }, null, 2)}\n`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
