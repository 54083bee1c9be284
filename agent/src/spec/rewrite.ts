// The OCI spec the shim forwards was written for the host. Rewritten here for the guest: the rootfs
// is the overlay the agent built, the cgroup sits under the sandbox's cgroup root and is the
// container's own view (cgroup-view.ts), and what only means something on the host (namespace
// paths into the host's /proc, hooks, host device nodes, host bind mounts) is dropped or mapped; what cannot be honoured is rejected with a clear message.
import { invalid } from "../api/errors.ts";
import { ownCgroupView } from "./cgroup-view.ts";
import { withHome } from "./home.ts";
import { checkSupportedFields } from "./supported.ts";

type Json = Record<string, unknown>;

export interface RewriteContext {
  containerId: string;
  /** Absolute path of the container's root filesystem in the guest. */
  rootfs: string;
  /** cgroupsPath for the runtime, e.g. /cove/<id>. */
  cgroupsPath: string;
  /** Guest files standing in for the host's /etc/hosts, /etc/resolv.conf, /etc/hostname binds. */
  etcFiles: Record<string, string>;
  /** A mounted storage's guest path by id (undefined: unknown id). */
  storagePath(id: string): string | undefined;
  /** A guest file for host-only bind sources CRI adds (e.g. /dev/termination-log). */
  scratchFile(destination: string): string;
  /** The guest path of the pod's shared pid/ipc/uts namespace (agent/src/sandbox/pod-namespaces.ts). */
  podNamespace?: (type: "pid" | "ipc" | "uts") => string;
  /** Whether an LSM is usable in the guest (apparmor/selinux fields are dropped otherwise). */
  apparmor?: boolean;
  selinux?: boolean;
  /** A uid's home in the container's /etc/passwd: given, a process without HOME gets it (or "/"). */
  homeOf?: (uid: number) => string | undefined;
}

export interface Rewritten {
  spec: Json;
  /** What was dropped or mapped, for the log. */
  notes: string[];
}

/** Mount sources of the form storage:<id>[/sub/path] refer to a storage the agent mounted. */
export const STORAGE_PREFIX = "storage:";

/** Destinations CRI bind-mounts from host files that the guest provides itself. */
const SCRATCH_DESTINATIONS = new Set(["/dev/termination-log"]);

const NAMESPACES = new Set(["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]);

const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const isOptString = (v: unknown): boolean => v === undefined || typeof v === "string";

export function rewriteSpec(input: Json, ctx: RewriteContext): Rewritten {
  const spec = structuredClone(input);
  const notes: string[] = [];
  if (typeof spec.ociVersion !== "string") throw invalid("spec: ociVersion missing");
  checkSupportedFields(spec);
  const proc = spec.process;
  if (!isObj(proc)) throw invalid("spec: process missing");
  if (!Array.isArray(proc.args) || proc.args.length === 0 || !proc.args.every((a) => typeof a === "string"))
    throw invalid("spec: process.args must be a non-empty list of strings");

  if (ctx.homeOf) withHome(proc, ctx.homeOf);

  const root = isObj(spec.root) ? spec.root : {};
  spec.root = { path: ctx.rootfs, readonly: root.readonly === true };

  if (spec.hooks !== undefined) {
    delete spec.hooks;
    notes.push("hooks dropped (they are host programs)");
  }
  if (!ctx.apparmor && proc.apparmorProfile !== undefined) {
    delete proc.apparmorProfile;
    notes.push("apparmorProfile dropped (no AppArmor in the guest)");
  }
  if (!ctx.selinux && proc.selinuxLabel !== undefined) {
    delete proc.selinuxLabel;
    notes.push("selinuxLabel dropped (no SELinux in the guest)");
  }

  const linux: Json = isObj(spec.linux) ? spec.linux : {};
  spec.linux = linux;
  linux.cgroupsPath = ctx.cgroupsPath;
  if (!ctx.selinux && linux.mountLabel !== undefined) delete linux.mountLabel;

  if (linux.namespaces !== undefined) {
    if (!Array.isArray(linux.namespaces)) throw invalid("spec: linux.namespaces must be a list");
    const out: Json[] = [];
    for (const ns of linux.namespaces) {
      // A path of another JSON type would reach a template literal below (an object whose own
      // "toString" is no function makes that throw a TypeError instead of a clear refusal).
      if (!isObj(ns) || typeof ns.type !== "string" || !NAMESPACES.has(ns.type) || !isOptString(ns.path))
        throw invalid(`spec: bad namespace entry ${JSON.stringify(ns)}`);
      if (ns.type === "network") {
        // The VM is the pod's network: containers share the guest's network namespace.
        if (ns.path) notes.push(`network namespace ${ns.path} → the guest's`);
        continue;
      }
      if (typeof ns.path === "string" && ns.path !== "") {
        if (ns.type === "user")
          throw invalid(`spec: joining user namespace ${ns.path} cannot be honoured in the guest`);
        const shared = ns.type === "pid" || ns.type === "ipc" || ns.type === "uts" ? ns.type : undefined;
        const pod = shared && ctx.podNamespace?.(shared);
        if (pod) {
          // A host path here is the pod's (CRI: the pause process's): join the pod's in the guest.
          notes.push(`${ns.type} namespace ${ns.path} → the pod's in the guest (${pod})`);
          out.push({ type: ns.type, path: pod });
          continue;
        }
        notes.push(`${ns.type} namespace path ${ns.path} (a host path) dropped: new ${ns.type} namespace`);
        out.push({ type: ns.type });
      } else {
        out.push({ type: ns.type });
      }
    }
    linux.namespaces = out;
  }

  if (linux.devices !== undefined) {
    if (Array.isArray(linux.devices) && linux.devices.length > 0)
      notes.push(`${linux.devices.length} host device node(s) dropped`);
    delete linux.devices;
  }

  if (spec.mounts !== undefined && !Array.isArray(spec.mounts)) throw invalid("spec: mounts must be a list");
  const view = ownCgroupView((linux.namespaces as Json[] | undefined) ?? [], spec.mounts as Json[] | undefined, notes);
  linux.namespaces = view.namespaces;
  if (view.mounts !== undefined) spec.mounts = view.mounts.map((m) => rewriteMount(m, ctx, notes));
  return { spec, notes };
}

function rewriteMount(given: unknown, ctx: RewriteContext, notes: string[]): Json {
  if (!isObj(given) || typeof given.destination !== "string" || given.destination === "")
    throw invalid(`spec: bad mount ${JSON.stringify(given)}`);
  let m = given;
  // Runtime spec 1.2: a relative destination (deprecated, still allowed) is relative to "/".
  if (!given.destination.startsWith("/")) {
    notes.push(`mount destination ${given.destination} → /${given.destination}`);
    m = { ...given, destination: `/${given.destination}` };
  }
  const dest = m.destination as string;
  if (m.options !== undefined && !(Array.isArray(m.options) && m.options.every((o) => typeof o === "string")))
    throw invalid(`spec: mount ${dest}: options must be a list of strings`);
  const opts = (m.options ?? []) as string[];
  const isBind = m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
  if (!isBind) return m; // proc, tmpfs, devpts, sysfs, mqueue, cgroup: made fresh in the guest
  const src = typeof m.source === "string" ? m.source : "";
  if (src.startsWith(STORAGE_PREFIX)) {
    const rest = src.slice(STORAGE_PREFIX.length);
    const slash = rest.indexOf("/");
    const id = slash < 0 ? rest : rest.slice(0, slash);
    const sub = slash < 0 ? "" : rest.slice(slash);
    if (sub.split("/").includes("..")) throw invalid(`spec: mount ${dest}: ".." in ${src}`);
    const base = ctx.storagePath(id);
    if (!base) throw invalid(`spec: mount ${dest}: storage ${id} is not attached`);
    return { ...m, source: base + sub };
  }
  const etc = ctx.etcFiles[dest];
  if (etc) {
    notes.push(`${dest}: host file → guest ${etc}`);
    return { ...m, source: etc };
  }
  if (SCRATCH_DESTINATIONS.has(dest)) {
    const f = ctx.scratchFile(dest);
    notes.push(`${dest}: host file → guest ${f}`);
    return { ...m, source: f };
  }
  throw invalid(
    `spec: bind mount ${src} → ${dest} refers to the host and cannot be honoured in the guest; attach it as a storage and use source "${STORAGE_PREFIX}<id>"`,
  );
}

/** Checks an exec's OCI Process JSON (the runtime validates the rest); `homeOf` as in RewriteContext. */
export function checkProcess(p: Json, homeOf?: (uid: number) => string | undefined): Json {
  checkSupportedFields(p, "process");
  if (!Array.isArray(p.args) || p.args.length === 0 || !p.args.every((a) => typeof a === "string"))
    throw invalid("process.args must be a non-empty list of strings");
  if (p.cwd !== undefined && (typeof p.cwd !== "string" || !p.cwd.startsWith("/")))
    throw invalid("process.cwd must be an absolute path");
  const out = structuredClone(p);
  delete out.apparmorProfile;
  delete out.selinuxLabel;
  if (out.cwd === undefined) out.cwd = "/";
  if (homeOf) withHome(out, homeOf);
  return out;
}
