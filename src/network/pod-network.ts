// The host side of a pod's network: for each Ethernet interface CNI put in the pod's namespace,
// a tap inside that namespace (created by the native addon on a helper thread), the two joined
// by tc mirred redirects both ways, and the interface's MAC/MTU/addresses/routes read for the
// guest. The taps become the backends of the VM's virtio-net devices. detach() removes exactly
// what attach() created; the taps also vanish by themselves if the shim dies (their fds close).
import { defaultLogger, type Logger } from "../virtio/log.ts";
import { TapBackend } from "../virtio/net/tap.ts";
import type { DnsConfig } from "./dns.ts";
import { type PodInterface, readInterfaces } from "./interfaces.ts";
import { NetnsShell } from "./iproute.ts";
import { type Redirect, redirectBothWays, removeRedirect } from "./tc.ts";

/** Tap names: "cove<N>"-style names no CNI plugin uses, numbered by the kernel. */
export const TAP_PREFIX = "covetap";

export interface WiredInterface extends PodInterface {
  /** The tap, inside the pod's namespace; hand it to NetDevice as its backend. */
  tap: TapBackend;
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
        const tap = TapBackend.open({ name: `${TAP_PREFIX}%d`, netns: opts.netns });
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
