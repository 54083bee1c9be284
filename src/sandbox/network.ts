// The pod's network as the sandbox uses it: which namespace the pod asked for, the host-side wiring
// (src/network: a tap per CNI interface, tc redirects both ways) handed to the backend as NICs, and
// the pod's resolv.conf (CRI bind-mounts it at /etc/resolv.conf) for the guest's DNS.
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { errorMessage, InvalidArgumentError, UnavailableError, WrongStateError } from "../common/errors.ts";
import type { NetConfig } from "../hypervisor/types.ts";
import { type DnsConfig, parseResolvConf } from "../network/dns.ts";
import { type PodNetns, podNetns } from "../network/netns.ts";
import { PodNetwork } from "../network/pod-network.ts";

type Json = Record<string, unknown>;

/** resolv.conf is a few lines; anything bigger is not one (and is not read whole). */
const MAX_RESOLV_CONF = 64 * 1024;

/** The pod's network namespace from its OCI spec; a malformed path is the caller's error. */
export function podNetnsOf(spec: Json, id: string): PodNetns {
  try {
    return podNetns(spec as Parameters<typeof podNetns>[0]);
  } catch (e) {
    throw new InvalidArgumentError(`cove: ${id}: ${errorMessage(e)}`);
  }
}

export function hostNetworkRefusal(id: string): WrongStateError {
  return new WrongStateError(
    `cove cannot run ${id} with the node's network (hostNetwork / --net-host): a VM cannot join the host's network namespace; give the pod its own network namespace`,
  );
}

/** Wires every interface of the pod's namespace to a tap; UNAVAILABLE (nothing left) if it cannot. */
export async function attachPodNetwork(netns: string, log: Logger): Promise<PodNetwork> {
  try {
    return await PodNetwork.attach({ netns, logger: log });
  } catch (e) {
    throw new UnavailableError(`cove: cannot attach the pod VM to its network namespace ${netns}: ${errorMessage(e)}`);
  }
}

/** The backend's NICs for a wired pod network, in interface order. */
export function nicsOf(net: PodNetwork): NetConfig[] {
  return net.interfaces.map((i, n) => ({ id: `net${n}`, hostEnd: i.tap, mac: i.mac, mtu: i.mtu }));
}

/** The host file CRI bind-mounts at /etc/resolv.conf in this spec, if any. */
export function resolvConfSource(spec: Json): string | undefined {
  if (!Array.isArray(spec.mounts)) return undefined;
  for (const m of spec.mounts as Json[]) {
    if (m.destination !== "/etc/resolv.conf" || typeof m.source !== "string") continue;
    if (m.source.startsWith("/")) return m.source;
  }
  return undefined;
}

/** The DNS settings of the resolv.conf this spec mounts, or undefined (none, unreadable: logged). */
export function podDns(spec: Json, log: Logger): DnsConfig | undefined {
  const src = resolvConfSource(spec);
  if (!src) return undefined;
  try {
    const buf = readFileSync(src);
    return parseResolvConf(buf.subarray(0, MAX_RESOLV_CONF).toString("utf8"));
  } catch (e) {
    log.warn({ path: src, err: errorMessage(e) }, "pod resolv.conf unreadable: the guest keeps its DNS");
    return undefined;
  }
}

/** One line for the log: each NIC with its addresses. */
export function describeNics(net: PodNetwork): string {
  return net.interfaces
    .map(
      (i) =>
        `${i.name} ${i.mac} [${i.addresses.map((a) => `${a.address}/${a.prefixLen}`).join(" ")}] via ${i.tap.name}`,
    )
    .join(", ");
}
