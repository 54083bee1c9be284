// ConfigureNetwork: the guest's NICs as the host wired them. Each NIC is found by MAC, renamed
// (down first: the kernel refuses to rename a running link), given its MTU and addresses, brought
// up; then the routes go in, in the host's order (link routes before the gateway routes that need
// them), and loopback comes up. Every step is a replace or a no-op when already so, so a retry
// after a partial failure converges. Nothing is changed before the whole request is validated and
// every MAC found.
import { writeFileSync } from "node:fs";
import {
  AlreadyExistsError,
  CoveError,
  errorMessage,
  InvalidArgumentError,
  NotFoundError,
  WrongStateError,
} from "../../../src/common/errors.ts";
import { internal, notFound, precondition } from "../api/errors.ts";
import type { Logger } from "../log.ts";
import type { NetworkConfig, RouteConfig } from "./config.ts";
import { renderResolvConf } from "./config.ts";
import { AF_INET6, afOf, formatIp } from "./ip.ts";
import {
  attrBytes,
  attrString,
  attrU32,
  IFA_ADDRESS,
  IFA_F_NODAD,
  IFA_FLAGS,
  IFA_LOCAL,
  IFF_UP,
  IFLA_IFNAME,
  IFLA_MTU,
  ifaddrmsg,
  ifinfomsg,
  type LinkInfo,
  NLM_F_CREATE,
  NLM_F_REPLACE,
  parseLink,
  RT_SCOPE,
  RT_TABLE_MAIN,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PREFSRC,
  RTA_PRIORITY,
  RTM_GETLINK,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RTPROT_BOOT,
  rtmsg,
} from "./rtnetlink.ts";
import { NetlinkError, Rtnl } from "./rtnl.ts";

export interface ConfigureOptions {
  /** A network namespace path (tests on a host); default: the agent's own (the guest's). */
  netns?: string | null;
  /** Where containers' /etc/resolv.conf comes from; written when the request has DNS settings. */
  resolvConf?: string;
  log?: Logger;
}

export interface ConfiguredInterface {
  mac: string;
  name: string;
  index: number;
}

/** The error for a kernel refusal (errno name `code`): what the host asked for cannot be done as asked. */
export function errnoError(code: string, message: string): CoveError {
  switch (code) {
    case "EINVAL":
    case "ERANGE":
    case "ENETUNREACH":
    case "EADDRNOTAVAIL":
    case "EAFNOSUPPORT":
      return new InvalidArgumentError(message);
    case "ENODEV":
    case "ENOENT":
    case "ESRCH":
      return new NotFoundError(message);
    case "EEXIST":
    case "ENOTUNIQ":
      return new AlreadyExistsError(message);
    case "EBUSY":
      return new WrongStateError(message);
    default:
      return internal(message);
  }
}

function apiError(e: unknown): CoveError {
  if (e instanceof CoveError) return e;
  if (e instanceof NetlinkError) return errnoError(e.code, e.message);
  return internal(`network configuration: ${errorMessage(e)}`);
}

function links(nl: Rtnl): LinkInfo[] {
  return nl.dump(RTM_GETLINK, ifinfomsg({ index: 0 }), "RTM_GETLINK dump").map(parseLink);
}

function setLink(nl: Rtnl, l: LinkInfo, what: string, change: { up?: boolean; name?: string; mtu?: number }): void {
  const attrs = [];
  if (change.name !== undefined) attrs.push(attrString(IFLA_IFNAME, change.name));
  if (change.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, change.mtu));
  const flags = change.up === undefined ? {} : { flags: change.up ? IFF_UP : 0, change: IFF_UP };
  nl.request(
    RTM_NEWLINK,
    0,
    ifinfomsg({ index: l.index, ...flags }),
    attrs,
    `${what} (link ${l.name}, index ${l.index})`,
  );
  if (change.up !== undefined) l.flags = change.up ? l.flags | IFF_UP : l.flags & ~IFF_UP;
  if (change.name !== undefined) l.name = change.name;
  if (change.mtu !== undefined) l.mtu = change.mtu;
}

function rename(nl: Rtnl, l: LinkInfo, name: string): void {
  if (l.flags & IFF_UP) setLink(nl, l, "set down to rename", { up: false });
  setLink(nl, l, `rename to ${name}`, { name });
}

/** Brings `lo` up (the kernel leaves it down; 127.0.0.1 works only once it is up). */
export function loopbackUp(netns: string | null = null): void {
  const nl = new Rtnl(netns);
  try {
    const lo = links(nl).find((l) => l.name === "lo");
    if (!lo) throw notFound("loopback interface lo");
    if (!(lo.flags & IFF_UP)) setLink(nl, lo, "set up", { up: true });
  } catch (e) {
    throw apiError(e);
  } finally {
    nl.close();
  }
}

export function configureNetwork(cfg: NetworkConfig, opts: ConfigureOptions = {}): ConfiguredInterface[] {
  const nl = new Rtnl(opts.netns ?? null);
  try {
    const all = links(nl);
    // Find every NIC first: an unknown MAC changes nothing.
    const targets = cfg.interfaces.map((want) => {
      const found = all.filter((l) => l.mac === want.mac);
      if (found.length === 0) throw notFound(`network interface with MAC ${want.mac}`);
      if (found.length > 1)
        throw precondition(`MAC ${want.mac} is on ${found.length} interfaces (${found.map((l) => l.name).join(", ")})`);
      return { want, link: found[0] as LinkInfo };
    });
    const requested = new Set(targets.map((t) => t.link.index));

    for (const { want, link } of targets) {
      if (link.name === want.name) continue;
      const holder = all.find((l) => l.name === want.name);
      if (holder) {
        // Another NIC of this request has the name (e.g. two NICs swap names): move it aside.
        if (!requested.has(holder.index))
          throw precondition(`interface name ${want.name} is taken by ${holder.mac || "a link"} not in this request`);
        rename(nl, holder, `cove${holder.index}`.slice(0, 15));
      }
      rename(nl, link, want.name);
    }

    for (const { want, link } of targets) {
      if (want.mtu && link.mtu !== want.mtu) setLink(nl, link, `set mtu ${want.mtu}`, { mtu: want.mtu });
      for (const a of want.addresses) {
        const af = afOf(a.family);
        // IPv6: no duplicate address detection (the host's IPAM owns the address; DAD would keep
        // it "tentative", unusable, for a second or more after the link comes up).
        const flags = af === AF_INET6 ? IFA_F_NODAD : 0;
        nl.request(
          RTM_NEWADDR,
          NLM_F_CREATE | NLM_F_REPLACE,
          ifaddrmsg({ family: af, prefixlen: a.len, flags, scope: RT_SCOPE.universe, index: link.index }),
          [attrBytes(IFA_LOCAL, a.address), attrBytes(IFA_ADDRESS, a.address), attrU32(IFA_FLAGS, flags)],
          `add address ${a.text} to ${want.name}`,
        );
      }
      if (!(link.flags & IFF_UP)) setLink(nl, link, "set up", { up: true });
    }

    const now = links(nl);
    for (const r of cfg.routes) addRoute(nl, r, now);

    const lo = now.find((l) => l.name === "lo");
    if (lo && !(lo.flags & IFF_UP)) setLink(nl, lo, "set up", { up: true });

    if (cfg.dns && opts.resolvConf) {
      // In place (same inode): containers bind-mount this file, and keep seeing it after a rewrite.
      writeFileSync(opts.resolvConf, renderResolvConf(cfg.dns));
    }
    const done = targets.map(({ want, link }) => ({ mac: want.mac, name: want.name, index: link.index }));
    opts.log?.info(
      { interfaces: done, routes: cfg.routes.map((r) => r.text), dns: cfg.dns?.nameservers },
      "network configured",
    );
    return done;
  } catch (e) {
    throw apiError(e);
  } finally {
    nl.close();
  }
}

function addRoute(nl: Rtnl, r: RouteConfig, all: LinkInfo[]): void {
  const dev = all.find((l) => l.name === r.dev);
  if (!dev) throw notFound(`route ${r.text}: interface ${r.dev}`);
  const attrs = [attrU32(RTA_OIF, dev.index)];
  if (r.dst) attrs.push(attrBytes(RTA_DST, r.dst.address));
  if (r.gateway) attrs.push(attrBytes(RTA_GATEWAY, r.gateway));
  if (r.src) attrs.push(attrBytes(RTA_PREFSRC, r.src));
  if (r.metric) attrs.push(attrU32(RTA_PRIORITY, r.metric));
  // As `ip route add`: a route without a gateway is on-link.
  const scope = r.scope ?? (r.gateway ? RT_SCOPE.universe : RT_SCOPE.link);
  nl.request(
    RTM_NEWROUTE,
    NLM_F_CREATE | NLM_F_REPLACE,
    rtmsg({
      family: afOf(r.family),
      dstLen: r.dst?.len ?? 0,
      table: RT_TABLE_MAIN,
      protocol: RTPROT_BOOT,
      scope,
      type: RTN_UNICAST,
    }),
    attrs,
    `add route ${r.text}${r.src ? ` src ${formatIp(r.src)}` : ""}`,
  );
}
