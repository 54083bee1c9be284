// Where a shim serves: one socket per group of tasks (a pod), named the way containerd's runc shim
// names it, so containerd and tools find it in the usual place.
import { createHash } from "node:crypto";
import { join } from "node:path";

/** containerd's defaults.DefaultStateDir + "/s": hard-coded in containerd 1.6–2.2. */
export const DEFAULT_SOCKET_DIR = "/run/containerd/s";

export const GROUP_ANNOTATIONS = ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"] as const;

/** The group a task belongs to: an explicit group, else its CRI sandbox, else itself. */
export function groupingOf(id: string, annotations: Record<string, string> | undefined): string {
  for (const key of GROUP_ANNOTATIONS) {
    const v = annotations?.[key];
    if (v) return v;
  }
  return id;
}

/** The socket path: <dir>/hex(sha256(<containerd address>/<namespace>/<grouping>)). */
export function socketPath(containerdAddress: string, namespace: string, grouping: string, dir = DEFAULT_SOCKET_DIR) {
  const digest = createHash("sha256")
    .update(join(containerdAddress, namespace, grouping))
    .digest("hex");
  return join(dir, digest);
}

/** A filesystem socket address as containerd wants it (without the scheme it means an abstract socket). */
export function socketAddress(path: string): string {
  return `unix://${path}`;
}

/** The path inside a "unix://" address (or the string itself when it has no scheme). */
export function addressPath(address: string): string {
  return address.startsWith("unix://") ? address.slice("unix://".length) : address;
}
