// Finding the pod's network namespace. CRI (containerd's CNI setup) creates and pins it before
// the sandbox starts and names it in the sandbox's OCI spec: linux.namespaces[type=network].path.

export interface OciNamespace {
  type: string;
  path?: string;
}

export interface OciSpecWithNamespaces {
  linux?: { namespaces?: OciNamespace[] };
}

/**
 * What networking the pod asked for:
 * - `{ kind: "netns", path }`: join the existing namespace at `path` (a CRI pod: CNI set it up);
 * - `{ kind: "new" }`: a fresh, empty namespace (e.g. `ctr run` without CNI): nothing to wire;
 * - `{ kind: "host" }`: no network namespace entry: the pod shares the host's network, which a
 *   VM cannot do; the caller decides (refuse, or run without a NIC).
 */
export type PodNetns = { kind: "netns"; path: string } | { kind: "new" } | { kind: "host" };

export function podNetns(spec: OciSpecWithNamespaces): PodNetns {
  const ns = spec.linux?.namespaces?.find((n) => n.type === "network");
  if (!ns) return { kind: "host" };
  if (!ns.path) return { kind: "new" };
  if (!ns.path.startsWith("/") || ns.path.includes("\0")) {
    throw new Error(`network namespace path ${JSON.stringify(ns.path)} is not an absolute path`);
  }
  return { kind: "netns", path: ns.path };
}
