// Reading what CNI configured in the pod's namespace: the Ethernet interfaces (veth, macvlan…),
// their MAC, MTU and addresses, and the routes through them. This is what the guest must be
// given so that, behind the tc redirect, it looks to the network exactly like the interface did.
import type { NetnsShell } from "./iproute.ts";

export interface IfAddress {
  family: "inet" | "inet6";
  address: string;
  prefixLen: number;
}

export interface Route {
  family: "inet" | "inet6";
  /** "default" or a CIDR. */
  dst: string;
  gateway?: string;
  dev: string;
  /** Preferred source address. */
  src?: string;
  scope?: string;
  metric?: number;
}

export interface PodInterface {
  name: string;
  index: number;
  mac: string;
  mtu: number;
  /** Global-scope addresses (link-local ones the guest derives itself). */
  addresses: IfAddress[];
  /** Routes through this interface, link routes before gateway routes (the order to add them). */
  routes: Route[];
}

interface IpLink {
  ifindex: number;
  ifname: string;
  link_type?: string;
  address?: string;
  mtu: number;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  scope?: string;
  protocol?: string;
  metric?: number;
  type?: string;
}

/** Kinds of link we never hand to the guest: our own taps, tunnels, bridges inside the namespace. */
const SKIP_KINDS = new Set(["tun", "bridge", "ipip", "sit", "gre", "vxlan", "wireguard", "dummy"]);

/**
 * The namespace's Ethernet interfaces (loopback and tap/tunnel devices excluded), with their
 * addresses and routes. `exclude` names interfaces to ignore (e.g. taps made earlier).
 */
export async function readInterfaces(sh: NetnsShell, exclude: readonly string[] = []): Promise<PodInterface[]> {
  const [links, addrs, r4, r6] = await Promise.all([
    sh.ipJson<IpLink>("-d", "link", "show"),
    sh.ipJson<IpLink>("addr", "show"),
    sh.ipJson<IpRoute>("-4", "route", "show", "table", "main"),
    sh.ipJson<IpRoute>("-6", "route", "show", "table", "main").catch(() => [] as IpRoute[]), // IPv6 may be off
  ]);
  const out: PodInterface[] = [];
  for (const l of links) {
    if (l.link_type !== "ether" || !l.address || exclude.includes(l.ifname)) continue;
    if (SKIP_KINDS.has(l.linkinfo?.info_kind ?? "")) continue;
    const a = addrs.find((x) => x.ifindex === l.ifindex);
    const addresses: IfAddress[] = (a?.addr_info ?? [])
      .filter((x) => (x.family === "inet" || x.family === "inet6") && (x.scope ?? "global") === "global")
      .map((x) => ({ family: x.family as "inet" | "inet6", address: x.local, prefixLen: x.prefixlen }));
    const routes = [...r4.map((r) => toRoute(r, "inet")), ...r6.map((r) => toRoute(r, "inet6"))].filter(
      (r): r is Route => r !== undefined && r.dev === l.ifname,
    );
    // Gateway routes need the link route to their gateway first.
    routes.sort((x, y) => Number(x.gateway !== undefined) - Number(y.gateway !== undefined));
    out.push({ name: l.ifname, index: l.ifindex, mac: l.address, mtu: l.mtu, addresses, routes });
  }
  return out;
}

function toRoute(r: IpRoute, family: "inet" | "inet6"): Route | undefined {
  if (!r.dev) return undefined;
  // The guest kernel makes these itself when the address is added (and would refuse duplicates).
  if (r.protocol === "kernel") return undefined;
  if (r.type && r.type !== "unicast") return undefined;
  if (family === "inet6" && (r.dst.startsWith("fe80:") || r.dst.startsWith("ff00:"))) return undefined;
  const route: Route = { family, dst: r.dst, dev: r.dev };
  if (r.gateway) route.gateway = r.gateway;
  if (r.prefsrc) route.src = r.prefsrc;
  if (r.scope && r.scope !== "global") route.scope = r.scope;
  if (r.metric !== undefined) route.metric = r.metric;
  return route;
}
