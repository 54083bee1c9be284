// The host side of a pod's network: for each Ethernet interface CNI put in the pod's namespace,
// a tap inside that namespace (created by the native addon on a helper thread), the two joined
// by tc mirred redirects both ways, and the interface's MAC/MTU/addresses/routes read for the
// guest. The taps become the host ends of the VM's virtio-net devices. detach() removes exactly
// what attach() created; the taps also vanish by themselves if the shim dies (their fds close).

import { errorMessage } from "../common/errors.ts";
import { CommandError } from "../common/exec.ts";
import { defaultLogger, type Logger } from "../virtio/log.ts";
import { Tap } from "../virtio/net/tap.ts";
import type { DnsConfig } from "./dns.ts";
import { type PodInterface, readInterfaces } from "./interfaces.ts";
import { NetnsShell } from "./iproute.ts";
import { type Redirect, redirectBothWays, removeRedirect } from "./tc.ts";

/** Tap names: "cove<N>"-style names no CNI plugin uses, numbered by the kernel. */
export const TAP_PREFIX = "covetap";

export interface WiredInterface extends PodInterface {
  /** The tap, inside the pod's namespace; hand it to NetDevice as its host end. */
  tap: Tap;
}

/** What the guest agent needs to configure each NIC (found in the guest by MAC). */
export interface GuestNetworkConfig {
  interfaces: { name: string; mac: string; mtu: number; addresses: string[] }[];
  routes: { dst: string; gateway?: string; dev: string; src?: string; scope?: string; family: "inet" | "inet6" }[];
  dns?: DnsConfig;
}

export interface AttachOptions {
  /** The pod's network namespace (from podNetns()). */
  netns: string;
  logger?: Logger;
}

/**
 * What attach() created, as the sandbox records it in the VM's state directory: after a shim
 * SIGKILL the taps vanish with their fds, but the ingress qdisc and redirect filter on the CNI
 * interface stay, and `delete` undoes them from this record (undoRecorded).
 */
export interface NetRecord {
  netns: string;
  interfaces: { name: string; tap: string }[];
}

/** Interface names as the kernel allows them (IFNAMSIZ 16 with the NUL, no '/', no spaces). */
const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

/** A record read back from disk, checked (it drives `tc` and `ip` as root); throws if malformed. */
export function parseNetRecord(v: unknown): NetRecord {
  const r = v as Partial<NetRecord> | null;
  if (
    !r ||
    typeof r !== "object" ||
    typeof r.netns !== "string" ||
    !r.netns.startsWith("/") ||
    !Array.isArray(r.interfaces)
  )
    throw new Error("not a pod network record");
  if (r.netns.length > 4096 || r.netns.includes("\0")) throw new Error("bad netns path in the pod network record");
  const interfaces = r.interfaces.map((i: unknown) => {
    const x = i as { name?: unknown; tap?: unknown } | null;
    if (!x || typeof x.name !== "string" || typeof x.tap !== "string" || !IFNAME.test(x.name) || !IFNAME.test(x.tap))
      throw new Error("bad interface in the pod network record");
    if (!x.tap.startsWith(TAP_PREFIX)) throw new Error(`pod network record names ${x.tap}, not one of our taps`);
    return { name: x.name, tap: x.tap };
  });
  return { netns: r.netns, interfaces };
}

interface Wiring {
  iface: WiredInterface;
  redirect: Redirect;
}

export class PodNetwork {
  private detached = false;

  private constructor(
    readonly netns: string,
    private readonly sh: NetnsShell,
    private readonly wirings: Wiring[],
    private readonly log: Logger,
  ) {}

  get interfaces(): WiredInterface[] {
    return this.wirings.map((w) => w.iface);
  }

  static async attach(opts: AttachOptions): Promise<PodNetwork> {
    const log = (opts.logger ?? defaultLogger).child({ netns: opts.netns });
    const sh = new NetnsShell(opts.netns);
    const found = (await readInterfaces(sh)).filter((i) => !i.name.startsWith(TAP_PREFIX));
    const net = new PodNetwork(opts.netns, sh, [], log);
    try {
      for (const iface of found) {
        const tap = Tap.open({ name: `${TAP_PREFIX}%d`, netns: opts.netns });
        const wired: WiredInterface = { ...iface, tap };
        try {
          await sh.ip("link", "set", "dev", tap.name, "mtu", String(iface.mtu), "up");
          const redirect = await redirectBothWays(sh, iface.name, tap.name);
          net.wirings.push({ iface: wired, redirect });
        } catch (e) {
          tap.close();
          throw e;
        }
        log.info({ iface: iface.name, tap: tap.name, mac: iface.mac, mtu: iface.mtu }, "pod interface wired to tap");
      }
    } catch (e) {
      await net.detach();
      throw e;
    }
    return net;
  }

  record(): NetRecord {
    return { netns: this.netns, interfaces: this.wirings.map((w) => ({ name: w.iface.name, tap: w.iface.tap.name })) };
  }

  /**
   * Undoes a dead shim's wiring from its record: the ingress qdiscs (and so the redirect filters)
   * on the CNI interfaces, and any tap still there. Idempotent; a namespace or interface that is
   * already gone (CNI DEL ran first) is fine. Returns what could not be removed.
   */
  static async undoRecorded(rec: NetRecord): Promise<string[]> {
    const sh = new NetnsShell(rec.netns);
    const errors: string[] = [];
    for (const i of [...rec.interfaces].reverse()) {
      errors.push(...(await removeRedirect(sh, { qdiscs: [i.name, i.tap] })));
      try {
        await sh.ip("link", "del", "dev", i.tap);
      } catch (e) {
        if (
          !(
            e instanceof CommandError &&
            /Cannot find device|No such|Cannot open network namespace|setns|reassociate/i.test(e.stderr)
          )
        )
          errors.push(errorMessage(e));
      }
    }
    return errors;
  }

  guestConfig(dns?: DnsConfig): GuestNetworkConfig {
    const cfg: GuestNetworkConfig = {
      interfaces: this.interfaces.map((i) => ({
        name: i.name,
        mac: i.mac,
        mtu: i.mtu,
        addresses: i.addresses.map((a) => `${a.address}/${a.prefixLen}`),
      })),
      routes: this.interfaces.flatMap((i) => i.routes),
    };
    if (dns) cfg.dns = dns;
    return cfg;
  }

  /**
   * Removes the redirects and closes the taps (the kernel deletes a tap with its last fd, and its
   * qdisc and filters with it). Safe to call twice, and after CNI already deleted the namespace.
   * The virtio-net devices using the taps must be closed or reset first.
   */
  async detach(): Promise<void> {
    if (this.detached) return;
    this.detached = true;
    for (const w of this.wirings.splice(0).reverse()) {
      const errors = await removeRedirect(this.sh, w.redirect);
      for (const err of errors) this.log.warn({ err, iface: w.iface.name }, "tc teardown failed");
      w.iface.tap.close();
    }
  }
}
