// The container's own cgroup view, as runc gives it on a cgroup v2 host: a cgroup namespace of its
// own and one cgroup2 mount at /sys/fs/cgroup whose root is the container's cgroup (memory.max,
// cpu.max, pids.max readable by the runtimes that size themselves from them). The spec the shim
// forwards was written for the host: on a cgroup v1 host containerd neither asks for a cgroup
// namespace nor knows the guest is cgroup v2, and CRI leaves the namespace out for privileged
// containers. The guest is always cgroup v2, so every container gets both here.

type Json = Record<string, unknown>;

export const CGROUP_MOUNT = "/sys/fs/cgroup";

/** The options runc's and containerd's default spec give the cgroup mount; `ro` unless asked rw. */
const CGROUP_OPTIONS = ["nosuid", "noexec", "nodev", "relatime"];

const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** At or under /sys/fs/cgroup (v1 specs may carry one mount per controller there). */
function underCgroupMount(dest: string): boolean {
  const d = dest.replace(/\/+$/, "");
  return d === CGROUP_MOUNT || d.startsWith(`${CGROUP_MOUNT}/`);
}

function isCgroupMount(m: Json): boolean {
  return m.type === "cgroup" || m.type === "cgroup2" || m.source === "cgroup" || m.source === "cgroup2";
}

/**
 * Adds a cgroup namespace to `namespaces` (a path to join is dropped: it names a host namespace) and
 * replaces every cgroup mount at or under /sys/fs/cgroup by one cgroup mount (cgroup2 in the guest),
 * read-only when the spec's was (writable for privileged containers). A spec without one gets a
 * read-only one after its /sys mount: containerd's `ctr run` spec has none, and then runc on any
 * host shows an empty /sys/fs/cgroup. Bind mounts there that are not cgroup filesystems are left to
 * the mount rewrite.
 */
export function ownCgroupView(
  namespaces: Json[],
  mounts: Json[] | undefined,
  notes: string[],
): { namespaces: Json[]; mounts: Json[] | undefined } {
  const ns = namespaces.filter((n) => n.type !== "cgroup");
  if (ns.length === namespaces.length) notes.push("cgroup namespace added (the container's own cgroup view)");
  ns.push({ type: "cgroup" });
  if (mounts === undefined) return { namespaces: ns, mounts };

  const out: Json[] = [];
  let placed = false;
  for (const m of mounts) {
    if (!isObj(m) || typeof m.destination !== "string" || !underCgroupMount(m.destination) || !isCgroupMount(m)) {
      out.push(m);
      continue;
    }
    if (placed) continue;
    placed = true;
    // Compared, never converted: String() of an object whose own "toString" is no function throws.
    const opts: unknown[] = Array.isArray(m.options) ? m.options : [];
    if (m.type !== "cgroup" || m.destination !== CGROUP_MOUNT)
      notes.push(
        `${m.destination} (${JSON.stringify(m.type)}) → a cgroup2 mount of the container's cgroup at ${CGROUP_MOUNT}`,
      );
    out.push(cgroupMount(!opts.includes("ro"))); // as runc: rw unless asked ro (CRI's privileged: "rw")
  }
  if (!placed) {
    let at = out.length;
    for (const [i, m] of out.entries()) if (isObj(m) && m.destination === "/sys") at = i + 1;
    out.splice(at, 0, cgroupMount(false));
    notes.push(`read-only cgroup2 mount of the container's cgroup added at ${CGROUP_MOUNT}`);
  }
  return { namespaces: ns, mounts: out };
}

function cgroupMount(writable: boolean): Json {
  return {
    destination: CGROUP_MOUNT,
    type: "cgroup",
    source: "cgroup",
    options: [...CGROUP_OPTIONS, writable ? "rw" : "ro"],
  };
}
