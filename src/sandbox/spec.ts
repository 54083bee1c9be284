// What the shim adjusts in a container's OCI spec before the agent sees it: bind mounts whose source
// only exists on the host and that cove can replace with a guest equivalent. The agent rewrites the
// rest (namespace paths, hooks, /etc files) and refuses what cannot be honoured.
type Json = Record<string, unknown>;

export interface SpecAdjustment {
  spec: Json;
  notes: string[];
}

/** CRI's pod-wide /dev/shm (a host tmpfs under the sandbox's state dir) becomes a tmpfs in the guest. */
export function adjustSpecForGuest(input: Json): SpecAdjustment {
  const spec = structuredClone(input);
  const notes: string[] = [];
  if (Array.isArray(spec.mounts)) {
    spec.mounts = (spec.mounts as Json[]).map((m) => {
      const opts = Array.isArray(m.options) ? (m.options as string[]) : [];
      const bind = m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
      if (bind && m.destination === "/dev/shm") {
        notes.push(`/dev/shm: host ${String(m.source)} → a tmpfs in the guest`);
        return {
          destination: "/dev/shm",
          type: "tmpfs",
          source: "shm",
          options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        };
      }
      return m;
    });
  }
  return { spec, notes };
}
