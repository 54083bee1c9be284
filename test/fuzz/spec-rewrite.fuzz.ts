// The OCI spec rewrite in the agent (agent/src/spec/rewrite.ts) on specs shaped like those CRI and
// ctr write, from JSON as the agent parses it: every field sometimes of the wrong JSON type, objects
// with own "toString" or "__proto__" keys, namespaces to join by host path, bind mounts from the
// host, from storages (with ".." in them), onto /etc files and /dev/termination-log, cgroup mounts
// of v1 and v2 hosts, hooks, devices and LSM labels.
// Invariants: the rewrite returns a spec or refuses with INVALID_ARGUMENT (never another error);
// its input is left as it was; the result runs on the agent's rootfs in the agent's cgroup, with
// no hooks or host devices, joins no namespace by a path other than the pod's, has exactly one
// cgroup namespace and at most one cgroup mount (at /sys/fs/cgroup), and every bind mount's source
// is a storage's path (no ".."), a guest /etc file or a guest scratch file: never a host path.
import { type RewriteContext, rewriteSpec } from "../../agent/src/spec/rewrite.ts";
import { CoveError } from "../../src/common/errors.ts";
import { grpcStatus } from "../../src/common/grpc-status.ts";
import { Code } from "../../src/ttrpc/index.ts";
import { type CaseContext, type Fuzzer, type Rng, runCases } from "./fuzz.ts";

type Json = Record<string, unknown>;

const STORAGE = "/run/cove/storage/vol1";
const ETC: Record<string, string> = {
  "/etc/hosts": "/run/cove/sandbox/hosts",
  "/etc/resolv.conf": "/run/cove/sandbox/resolv.conf",
  "/etc/hostname": "/run/cove/sandbox/hostname",
};
const SCRATCH = "/run/cove/bundle/file-_dev_termination_log";
const POD_NS = (t: string) => `/run/cove/pod/${t}`;
const NAMESPACES = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];

/** A value of the wrong JSON type, or an object with keys that trip careless code. */
function hostile(rng: Rng): unknown {
  return rng.pick([
    () => null,
    () => 7,
    () => "str",
    () => [],
    () => ({}),
    () => true,
    () => JSON.parse('{"toString": 1}'),
    () => JSON.parse('{"__proto__": {"polluted": 1}, "type": "bind"}'),
    () => JSON.parse('{"valueOf": "x", "toString": []}'),
  ])();
}

function maybe<T>(rng: Rng, good: () => T, p = 0.97): T | unknown {
  return rng.chance(p) ? good() : hostile(rng);
}

function list<T>(rng: Rng, n: number, item: () => T): T[] {
  return Array.from({ length: rng.int(n + 1) }, item);
}

function namespace(rng: Rng): unknown {
  return maybe(rng, () => {
    const ns: Json = { type: rng.chance(0.9) ? rng.pick(NAMESPACES) : rng.pick(["bogus", "constructor", ""]) };
    if (rng.chance(0.4))
      ns.path = rng.chance(0.8) ? rng.pick(["", "/proc/42/ns/pid", "/var/run/netns/cni-1"]) : hostile(rng);
    return ns;
  });
}

function mount(rng: Rng): unknown {
  return maybe(rng, () => {
    const m: Json = {
      destination: maybe(rng, () =>
        rng.pick([
          "/proc",
          "/dev",
          "/sys",
          "/etc/hosts",
          "/etc/resolv.conf",
          "/etc/hostname",
          "/dev/termination-log",
          "/sys/fs/cgroup",
          "/sys/fs/cgroup/cpu",
          "/data",
          "data",
          "/",
        ]),
      ),
      type: rng.chance(0.9)
        ? rng.pick(["bind", "proc", "tmpfs", "cgroup", "cgroup2", "none", "sysfs", undefined])
        : hostile(rng),
      source: rng.chance(0.5)
        ? rng.pick(["storage:vol1", "storage:vol1/sub", "tmpfs", "proc"])
        : rng.chance(0.9)
          ? rng.pick([
              "storage:vol1",
              "storage:vol1/sub/dir",
              "storage:vol1/../etc",
              "storage:vol1/a/..",
              "storage:..",
              "storage:",
              "storage:other",
              "/var/lib/kubelet/pods/x",
              "/etc/hosts",
              "cgroup",
              "proc",
              "tmpfs",
            ])
          : hostile(rng),
    };
    if (rng.chance(0.8))
      m.options = maybe(rng, () =>
        list(rng, 4, () =>
          rng.chance(0.9) ? rng.pick(["rbind", "bind", "ro", "rw", "nosuid", "rprivate"]) : hostile(rng),
        ),
      );
    return m;
  });
}

function spec(rng: Rng): unknown {
  const s: Json = {
    ociVersion: maybe(rng, () => "1.1.0", 0.97),
    process: maybe(
      rng,
      () => {
        const p: Json = {
          args: maybe(rng, () => (rng.chance(0.95) ? ["sh", "-c", "true"] : rng.pick([[], [1], [""]])), 0.95),
          cwd: "/",
          env: maybe(rng, () => (rng.chance(0.5) ? ["PATH=/bin"] : ["PATH=/bin", "HOME=/root"])),
          user: maybe(rng, () => ({ uid: rng.pick([0, 1000, -1, 2 ** 32]), gid: 0 })),
          terminal: rng.chance(0.2),
        };
        if (rng.chance(0.2)) p.apparmorProfile = "cri-containerd.apparmor.d";
        if (rng.chance(0.2)) p.selinuxLabel = "system_u:system_r:container_t:s0";
        return p;
      },
      0.97,
    ),
    root: maybe(rng, () => ({ path: "rootfs", readonly: rng.chance(0.5) })),
  };
  if (rng.chance(0.2)) s.hooks = { prestart: [{ path: "/usr/bin/host-hook" }] };
  if (rng.chance(0.95)) {
    s.linux = maybe(rng, () => {
      const l: Json = { cgroupsPath: "/kubepods/pod1/c1" };
      if (rng.chance(0.9)) l.namespaces = maybe(rng, () => list(rng, 6, () => namespace(rng)));
      if (rng.chance(0.3)) l.devices = maybe(rng, () => [{ path: "/dev/kvm", type: "c", major: 10, minor: 232 }]);
      if (rng.chance(0.2)) l.mountLabel = "system_u:object_r:container_file_t:s0";
      return l;
    });
  }
  if (rng.chance(0.95)) s.mounts = maybe(rng, () => list(rng, 8, () => mount(rng)), 0.97);
  // Through JSON, as the agent gets it (own "__proto__" keys survive; prototypes do not).
  return JSON.parse(JSON.stringify(s));
}

const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function checkResult(out: Json, ctx: RewriteContext, violate: (m: string) => void): void {
  const root = out.root as Json;
  if (root?.path !== ctx.rootfs) violate(`root.path ${String(root?.path)}`);
  if (out.hooks !== undefined) violate("hooks kept");
  const linux = out.linux as Json;
  if (!isObj(linux) || linux.cgroupsPath !== ctx.cgroupsPath) violate("cgroupsPath not the agent's");
  if (linux?.devices !== undefined) violate("host devices kept");
  const nss = (linux?.namespaces ?? []) as Json[];
  let cgroupNs = 0;
  for (const ns of nss) {
    if (!isObj(ns) || !NAMESPACES.includes(ns.type as string) || ns.type === "network")
      violate(`namespace ${JSON.stringify(ns)}`);
    if (ns.type === "cgroup") cgroupNs++;
    if (ns.path !== undefined && ns.path !== POD_NS(ns.type as string)) violate(`joins namespace ${String(ns.path)}`);
  }
  if (cgroupNs !== 1) violate(`${cgroupNs} cgroup namespaces`);
  let cgroupMounts = 0;
  for (const m of (out.mounts ?? []) as Json[]) {
    if (!isObj(m) || typeof m.destination !== "string" || !m.destination.startsWith("/")) {
      violate(`mount ${JSON.stringify(m)?.slice(0, 80)}`);
      continue;
    }
    // The container's cgroup view: one cgroup mount at or under /sys/fs/cgroup, ours.
    const underCgroup = m.destination === "/sys/fs/cgroup" || m.destination.startsWith("/sys/fs/cgroup/");
    const cgroupFs = m.type === "cgroup" || m.type === "cgroup2" || m.source === "cgroup" || m.source === "cgroup2";
    if (underCgroup && cgroupFs) {
      cgroupMounts++;
      if (m.destination !== "/sys/fs/cgroup" || m.type !== "cgroup") violate(`cgroup mount ${JSON.stringify(m)}`);
    }
    const opts = Array.isArray(m.options) ? m.options : [];
    const bind = m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
    if (!bind) continue;
    const src = m.source;
    const fromStorage = typeof src === "string" && (src === STORAGE || src.startsWith(`${STORAGE}/`));
    if (fromStorage && (src as string).split("/").includes(".."))
      violate(`bind source ${src} climbs out of its storage`);
    if (!fromStorage && !Object.values(ETC).includes(src as string) && src !== SCRATCH)
      violate(`bind mount of ${String(src)}`);
  }
  if (out.mounts !== undefined && cgroupMounts !== 1) violate(`${cgroupMounts} cgroup mounts at /sys/fs/cgroup`);
}

function oneCase({ rng, rec }: CaseContext): void {
  const input = spec(rng) as Json;
  const before = JSON.stringify(input);
  const pod = rng.chance(0.5);
  const ctx: RewriteContext = {
    containerId: "c1",
    rootfs: "/run/cove/containers/c1/rootfs",
    cgroupsPath: "/cove/c1",
    etcFiles: ETC,
    storagePath: (id) => (id === "vol1" ? STORAGE : undefined),
    scratchFile: () => SCRATCH,
    ...(pod ? { podNamespace: POD_NS } : {}),
    ...(rng.chance(0.5) ? { homeOf: (uid: number) => (uid === 1000 ? "/home/u" : undefined) } : {}),
    apparmor: rng.chance(0.2),
    selinux: rng.chance(0.2),
  };
  rec.op(pod ? "rewrite:pod" : "rewrite");
  try {
    const { spec: out, notes } = rewriteSpec(input, ctx);
    rec.state("rewritten");
    rec.max("notes", notes.length);
    checkResult(out, ctx, (m) => rec.violate(m));
    JSON.stringify(out); // what the agent writes as config.json
  } catch (e) {
    if (e instanceof CoveError && grpcStatus(e).code === Code.INVALID_ARGUMENT) {
      rec.state("refused");
      rec.max("refusalChars", e.message.length);
    } else rec.violate(`threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} (not INVALID_ARGUMENT)`);
  }
  if (JSON.stringify(input) !== before) rec.violate("the input spec was changed");
  if (({} as Json).polluted !== undefined) rec.violate("Object.prototype polluted");
}

export const fuzzer: Fuzzer = {
  name: "spec-rewrite",
  run: (opts) => runCases("spec-rewrite", opts, oneCase),
};
