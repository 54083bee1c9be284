// ConfigureNetworkRequest (proto/agent/v1/agent.proto) checked and typed: everything from the host
// is validated here, before the agent changes anything. Failures are INVALID_ARGUMENT.
import { errorMessage } from "../../../src/common/errors.ts";
import { invalid } from "../api/errors.ts";
import { type Family, familyOf, ipBytes, normalizeMac, type Prefix, parseCidr, RT_SCOPE_NAMES } from "./ip.ts";

export interface InterfaceConfig {
  mac: string;
  name: string;
  /** 0: leave as the device has it. */
  mtu: number;
  addresses: Prefix[];
}

export interface RouteConfig {
  family: Family;
  /** undefined: the default route. */
  dst?: Prefix;
  gateway?: Buffer;
  dev: string;
  src?: Buffer;
  /** RT_SCOPE_*; undefined: link for routes without a gateway, universe with one (as `ip route`). */
  scope?: number;
  metric: number;
  /** For messages. */
  text: string;
}

export interface DnsConfig {
  nameservers: string[];
  searches: string[];
  options: string[];
}

export interface NetworkConfig {
  interfaces: InterfaceConfig[];
  routes: RouteConfig[];
  dns?: DnsConfig;
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const DOMAIN_RE = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/;
const OPTION_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const MAX_ITEMS = 64;

function list(v: unknown, what: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${what} must be a list`);
  if (v.length > MAX_ITEMS) throw invalid(`${what}: at most ${MAX_ITEMS} entries`);
  return v;
}

function str(v: unknown, what: string): string {
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") throw invalid(`${what} must be a string`);
  return v;
}

function guard<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw invalid(`${what}: ${errorMessage(e)}`);
  }
}

export function ifnameOk(name: string): boolean {
  return IFNAME_RE.test(name) && name !== "." && name !== "..";
}

/** Validates a ConfigureNetworkRequest as decoded (or anything else: nothing in it is trusted). */
export function parseNetworkConfig(input: unknown): NetworkConfig {
  if (typeof input !== "object" || input === null) throw invalid("request must be an object");
  const req = input as Record<string, unknown>;
  const interfaces: InterfaceConfig[] = list(req.interfaces, "interfaces").map((raw, i) => {
    const r = (raw ?? {}) as Record<string, unknown>;
    const what = `interfaces[${i}]`;
    const mac = guard(`${what}.mac`, () => normalizeMac(r.mac));
    const name = str(r.name, `${what}.name`);
    if (!ifnameOk(name))
      throw invalid(`${what}.name "${name.slice(0, 64)}" is not an interface name (1-15 of [A-Za-z0-9_.-])`);
    const mtu = r.mtu === undefined || r.mtu === null ? 0 : Number(r.mtu);
    if (!Number.isInteger(mtu) || (mtu !== 0 && (mtu < 68 || mtu > 65535)))
      throw invalid(`${what}.mtu ${String(r.mtu)} is out of range (68-65535, or 0 to keep the device's)`);
    const addresses = list(r.addresses, `${what}.addresses`).map((a, j) =>
      guard(`${what}.addresses[${j}]`, () => parseCidr(str(a, "address"))),
    );
    return { mac, name, mtu, addresses };
  });
  const seen = new Set<string>();
  for (const i of interfaces) {
    if (seen.has(i.mac)) throw invalid(`interface MAC ${i.mac} is listed twice`);
    if (seen.has(i.name)) throw invalid(`interface name ${i.name} is listed twice`);
    seen.add(i.mac).add(i.name);
  }

  const routes: RouteConfig[] = list(req.routes, "routes").map((raw, i) => {
    const r = (raw ?? {}) as Record<string, unknown>;
    const what = `routes[${i}]`;
    const dstText = str(r.dst, `${what}.dst`);
    const gwText = str(r.gateway, `${what}.gateway`);
    const srcText = str(r.src, `${what}.src`);
    const dev = str(r.dev, `${what}.dev`);
    if (!ifnameOk(dev)) throw invalid(`${what}.dev "${dev.slice(0, 64)}" is not an interface name`);
    const dst =
      dstText === "default" || dstText === ""
        ? undefined
        : guard(`${what}.dst`, () => parseCidr(dstText, { network: true }));
    const families = new Set<Family>();
    if (dst) families.add(dst.family);
    const ip = (t: string, field: string) => {
      if (!t) return undefined;
      const f = familyOf(t);
      if (!f) throw invalid(`${what}.${field} "${t.slice(0, 64)}" is not an IP address`);
      families.add(f);
      return ipBytes(t);
    };
    const gateway = ip(gwText, "gateway");
    const src = ip(srcText, "src");
    const fam = str(r.family, `${what}.family`);
    if (fam && fam !== "inet" && fam !== "inet6")
      throw invalid(`${what}.family "${fam.slice(0, 16)}" must be inet or inet6`);
    if (fam) families.add(fam as Family);
    if (families.size > 1) throw invalid(`${what}: mixes IPv4 and IPv6`);
    if (families.size === 0) throw invalid(`${what}: a default route without gateway needs family inet or inet6`);
    const family = [...families][0] as Family;
    const scopeText = str(r.scope, `${what}.scope`);
    let scope: number | undefined;
    if (scopeText) {
      scope = RT_SCOPE_NAMES[scopeText] ?? (/^\d{1,3}$/.test(scopeText) ? Number(scopeText) : undefined);
      if (scope === undefined || scope > 255)
        throw invalid(`${what}.scope "${scopeText.slice(0, 16)}" is not a route scope`);
    }
    const metric = r.metric === undefined || r.metric === null ? 0 : Number(r.metric);
    if (!Number.isInteger(metric) || metric < 0 || metric > 0xffffffff)
      throw invalid(`${what}.metric is not a 32-bit number`);
    const text = `${dst?.text ?? "default"}${gwText ? ` via ${gwText}` : ""} dev ${dev}`;
    return { family, dst, gateway, dev, src, scope, metric, text };
  });

  let dns: DnsConfig | undefined;
  if (req.dns) {
    const d = req.dns as Record<string, unknown>;
    const nameservers = list(d.nameservers, "dns.nameservers").map((s, i) => {
      const t = str(s, `dns.nameservers[${i}]`);
      if (!familyOf(t)) throw invalid(`dns.nameservers[${i}] "${t.slice(0, 64)}" is not an IP address`);
      return t;
    });
    const searches = list(d.searches, "dns.searches").map((s, i) => {
      const t = str(s, `dns.searches[${i}]`);
      if (t.length > 253 || !DOMAIN_RE.test(t)) throw invalid(`dns.searches[${i}] "${t.slice(0, 64)}" is not a domain`);
      return t;
    });
    const options = list(d.options, "dns.options").map((s, i) => {
      const t = str(s, `dns.options[${i}]`);
      if (!OPTION_RE.test(t)) throw invalid(`dns.options[${i}] "${t.slice(0, 64)}" is not a resolver option`);
      return t;
    });
    if (nameservers.length || searches.length || options.length) dns = { nameservers, searches, options };
  }
  return { interfaces, routes, dns };
}

/** resolv.conf text for containers (resolv.conf(5)), in the order containerd's CRI writes a pod's. */
export function renderResolvConf(d: DnsConfig): string {
  const lines = d.searches.length ? [`search ${d.searches.join(" ")}`] : [];
  lines.push(...d.nameservers.map((n) => `nameserver ${n}`));
  if (d.options.length) lines.push(`options ${d.options.join(" ")}`);
  return `${lines.join("\n")}\n`;
}
