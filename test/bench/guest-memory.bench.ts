// Where an idle pod's guest memory goes, measured from inside the guest: one CRI pod (qemu
// backend) with one idle, privileged busybox container, which sees /proc/slabinfo, every guest
// process and the guest's files (see PROBE_SH). After COVE_BENCH_IDLE_MS of idle it reads
// /proc/meminfo, /proc/slabinfo, the smaps_rollup of every guest process and, with a small static
// mincore(2) probe, which files the guest's page cache holds. Prints the figures and writes
// bench-results/guest-memory.json. The agent's V8 heap statistics are printed when the agent has
// written them (SIGUSR2 to the agent, e.g. from a shell in the guest's root PID namespace:
// agent/src/pid1/memory-report.ts); a container cannot signal it.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";

const IDLE_MS = Number(process.env.COVE_BENCH_IDLE_MS ?? 30_000);
const CNI_BIN = "/usr/lib/cni";
const BRIDGE = "cove-gmem0";
const art = guestArtifacts();

// mincore(2) over each file named: resident KiB and size KiB. Static, so it runs in busybox.
const FINCORE_C = `
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
  long pg = sysconf(_SC_PAGESIZE);
  for (int i = 1; i < argc; i++) {
    int fd = open(argv[i], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) { if (fd >= 0) close(fd); continue; }
    void *p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { close(fd); continue; }
    size_t n = (st.st_size + pg - 1) / pg;
    unsigned char *v = malloc(n);
    long res = 0;
    if (v && mincore(p, st.st_size, v) == 0) for (size_t j = 0; j < n; j++) res += v[j] & 1;
    printf("%ld %ld %s\\n", res * pg / 1024, (long)((st.st_size + 1023) / 1024), argv[i]);
    free(v);
    munmap(p, st.st_size);
    close(fd);
  }
  return 0;
}
`;

// The container is in the pod's PID namespace (the agent's namespace holder is its PID 1), but the
// holder's root is the guest's, and the procfs mounted there is the guest's root PID namespace's:
// /proc/1/root/proc lists every guest process.
const PROBE_SH = `
R=/proc/1/root
echo '== meminfo'; cat /proc/meminfo
echo '== slabinfo'; cat /proc/slabinfo
echo '== dmesg'; dmesg | grep -E 'Memory:|percpu:' | head -20
echo '== procs'
for d in $R/proc/[0-9]*; do
  grep -q . $d/smaps_rollup 2>/dev/null || continue
  echo "pid \${d##*/} $(cat $d/comm) $(tr '\\\\0' ' ' < $d/cmdline | cut -c1-60)"
  grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Pss_Shmem):' $d/smaps_rollup
  grep -E '^(VmPTE):' $d/status
done
echo '== files'
fincore $R/usr/bin/node $R/opt/cove/* $R/usr/bin/* $R/usr/lib/x86_64-linux-gnu/* $R/lib64/* /bin/busybox /bin/fincore
echo '== agent'; cat $R/run/cove/agent-memory.json 2>/dev/null; echo
echo '== end'
`;

export interface ProcMem {
  pid: number;
  comm: string;
  rssKiB: number;
  pssKiB: number;
  pssAnonKiB: number;
  pssFileKiB: number;
  pteKiB: number;
}

/** Splits the probe's output into its `== name` sections. */
function sections(out: string): Record<string, string> {
  const r: Record<string, string> = {};
  let cur = "";
  for (const line of out.split("\n")) {
    const m = /^== (\S+)$/.exec(line);
    if (m) cur = m[1]!;
    else if (cur) r[cur] = `${r[cur] ?? ""}${line}\n`;
  }
  return r;
}

function kv(text: string): Record<string, number> {
  const r: Record<string, number> = {};
  for (const m of text.matchAll(/^(\S+):\s+(\d+)/gm)) r[m[1]!] = Number(m[2]);
  return r;
}

function procs(text: string): ProcMem[] {
  const out: ProcMem[] = [];
  for (const block of text.split(/^pid /m).slice(1)) {
    const [head = "", ...rest] = block.split("\n");
    const [pid, ...comm] = head.split(" ");
    const f = kv(rest.join("\n"));
    out.push({
      pid: Number(pid),
      comm: comm.join(" "),
      rssKiB: f.Rss ?? 0,
      pssKiB: f.Pss ?? 0,
      pssAnonKiB: f.Pss_Anon ?? 0,
      pssFileKiB: f.Pss_File ?? 0,
      pteKiB: f.VmPTE ?? 0,
    });
  }
  return out;
}

/** The biggest slab caches: name → KiB (active objects × object size, as slabtop counts). */
function slabs(text: string): { name: string; kib: number }[] {
  const out: { name: string; kib: number }[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || line.startsWith("#") || line.startsWith("slabinfo")) continue;
    // name active_objs num_objs objsize objperslab pagesperslab : ...
    const [name, , num, size, perSlab, pages] = f;
    const kib = (Number(num) / Math.max(1, Number(perSlab))) * Number(pages) * 4;
    if (Number.isFinite(kib) && Number(size) > 0) out.push({ name: name!, kib });
  }
  return out.sort((a, b) => b.kib - a.kib);
}

function files(text: string): { path: string; residentKiB: number; sizeKiB: number }[] {
  return text
    .split("\n")
    .map((l) => /^(\d+) (\d+) (.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => !!m && Number(m[1]) > 0)
    .map((m) => ({
      path: m[3]!.replace(/^\/proc\/1\/root/, "(guest)"),
      residentKiB: Number(m[1]),
      sizeKiB: Number(m[2]),
    }))
    .sort((a, b) => b.residentKiB - a.residentKiB);
}

const mib = (kib: number) => (kib / 1024).toFixed(1);

async function main() {
  const dir = mkdtempSync("/tmp/cove-gmem-");
  const fincore = join(dir, "fincore");
  writeFileSync(`${fincore}.c`, FINCORE_C);
  execFileSync("cc", ["-O2", "-static", "-o", fincore, `${fincore}.c`]);
  const conf = join(dir, "cni-conf");
  mkdirSync(conf);
  writeFileSync(
    join(conf, "10-cove-gmem.conflist"),
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "cove-gmem",
      plugins: [
        {
          type: "bridge",
          bridge: BRIDGE,
          isGateway: false,
          ipMasq: false,
          ipam: { type: "host-local", ranges: [[{ subnet: "10.231.9.0/24" }]], dataDir: join(dir, "ipam") },
        },
        { type: "loopback" },
      ],
    }),
  );
  const configPath = join(dir, "cove.toml");
  writeFileSync(
    configPath,
    `hypervisor = "qemu"\ncache_dir = "${join(dir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n\n[pod]\nwritable_layer_mib = 64\n`,
  );
  const cd = await Containerd.start({
    criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
    cniConfDir: conf,
    cniBinDir: CNI_BIN,
  });
  const cri = new CriClient(cd.address);
  let report: Record<string, unknown> = {};
  try {
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    const probeFiles = [
      { path: "bin/fincore", content: readFileSync(fincore), mode: 0o755 },
      { path: "probe.sh", content: PROBE_SH, mode: 0o755 },
    ];
    await importImage(cd, await buildImage(busyboxImage({ files: probeFiles }), images), "k8s.io");
    const pod: PodSandboxConfig = {
      metadata: { name: "gmem", uid: `gmem-${process.pid}-${Date.now()}`, namespace: "default", attempt: 0 },
      linux: { security_context: { privileged: true, namespace_options: { pid: 2 /* NODE */ } } },
    };
    const t0 = performance.now();
    const podId = await cri.runPodSandbox(pod, "cove");
    const id = await cri.createContainer(
      podId,
      {
        metadata: { name: "idle" },
        image: { image: BUSYBOX_IMAGE_REF },
        command: ["sleep", "1000000"],
        linux: { security_context: { privileged: true, namespace_options: { pid: 2 } } },
      },
      pod,
    );
    await cri.startContainer(id);
    const startMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const r = await cri.execSync(id, ["sh", "/probe.sh"], 60);
    const s = sections(r.stdout.toString());
    if (!s.end) throw new Error(`probe failed: ${r.stderr.toString()}\n${r.stdout.toString()}`);
    report = {
      idleMs: IDLE_MS,
      podStartMs: Math.round(startMs),
      meminfo: kv(s.meminfo ?? ""),
      dmesg: (s.dmesg ?? "").trim().split("\n"),
      slabs: slabs(s.slabinfo ?? "").slice(0, 25),
      processes: procs(s.procs ?? ""),
      files: files(s.files ?? ""),
      agent: s.agent?.trim() ? JSON.parse(s.agent) : undefined,
    };
    await cri.stopContainer(id, 0);
    await cri.removeContainer(id);
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
  } finally {
    cri.close();
    await cd.stop();
    try {
      execFileSync("ip", ["link", "del", BRIDGE], { stdio: "ignore" });
    } catch {
      // never created
    }
    execFileSync("rm", ["-rf", dir]);
  }
  const m = report.meminfo as Record<string, number>;
  console.log(`idle pod's guest after ${IDLE_MS / 1000} s (pod + container started in ${report.podStartMs} ms)`);
  console.log(
    `MemTotal ${mib(m.MemTotal!)} MiB, used (Total − Available) ${mib(m.MemTotal! - m.MemAvailable!)} MiB, ` +
      `free ${mib(m.MemFree!)} MiB; page cache ${mib(m.Cached!)} (shmem ${mib(m.Shmem!)}), buffers ${mib(m.Buffers!)}, ` +
      `anon ${mib(m.AnonPages!)}, slab ${mib(m.Slab!)} (unreclaimable ${mib(m.SUnreclaim!)}), ` +
      `page tables ${mib(m.PageTables!)}, kernel stacks ${mib(m.KernelStack!)}, percpu ${mib(m.Percpu ?? 0)} MiB`,
  );
  console.log("process                 RSS MiB   PSS MiB   anon   file   page tables KiB");
  for (const p of report.processes as ProcMem[])
    console.log(
      `${`${p.pid} ${p.comm}`.padEnd(22)} ${mib(p.rssKiB).padStart(8)} ${mib(p.pssKiB).padStart(9)} ${mib(p.pssAnonKiB).padStart(6)} ${mib(p.pssFileKiB).padStart(6)} ${String(p.pteKiB).padStart(8)}`,
    );
  console.log("page cache by file (resident / size MiB):");
  for (const f of (report.files as { path: string; residentKiB: number; sizeKiB: number }[]).slice(0, 15))
    console.log(`  ${mib(f.residentKiB).padStart(6)} / ${mib(f.sizeKiB).padStart(6)}  ${f.path}`);
  console.log("biggest slab caches (KiB):");
  for (const sl of (report.slabs as { name: string; kib: number }[]).slice(0, 12))
    console.log(`  ${Math.round(sl.kib).toString().padStart(6)}  ${sl.name}`);
  for (const l of report.dmesg as string[]) console.log(`  dmesg: ${l}`);
  if (report.agent) console.log(`agent: ${JSON.stringify(report.agent)}`);
  mkdirSync("bench-results", { recursive: true });
  writeFileSync("bench-results/guest-memory.json", `${JSON.stringify(report, null, 2)}\n`);
}

await main();
