// A CNI network for containerd's CRI plugin in tests: a private bridge + host-local IPAM (+ portmap
// for hostPort), written as a .conflist into a directory the test owns. Only the test's own bridge,
// subnet and IPAM state are touched; removeBridge() deletes the bridge the plugin created.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const CNI_BIN_DIR = "/usr/lib/cni";

export interface BridgeNetwork {
  /** Network (and file) name. */
  name: string;
  /** Linux bridge name (≤ 15 chars). */
  bridge: string;
  /** e.g. "10.231.9": the subnet is <prefix>.0/24 and the bridge's host address <prefix>.1. */
  prefix: string;
  /** The bridge gets <prefix>.1 on the host (the pods' gateway). */
  gateway?: boolean;
  /** Add the portmap plugin (hostPort mappings through iptables DNAT). */
  portmap?: boolean;
}

/** Writes `<confDir>/10-<name>.conflist`; IPAM state goes to `<stateDir>/ipam`. Returns the file. */
export function writeBridgeConflist(confDir: string, stateDir: string, n: BridgeNetwork): string {
  mkdirSync(confDir, { recursive: true });
  const plugins: Record<string, unknown>[] = [
    {
      type: "bridge",
      bridge: n.bridge,
      isGateway: n.gateway ?? false,
      ipMasq: false,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: `${n.prefix}.0/24`, gateway: `${n.prefix}.1` }]],
        routes: [{ dst: "0.0.0.0/0" }],
        dataDir: join(stateDir, "ipam"),
      },
    },
  ];
  if (n.portmap) plugins.push({ type: "portmap", capabilities: { portMappings: true }, snat: true });
  const file = join(confDir, `10-${n.name}.conflist`);
  writeFileSync(file, JSON.stringify({ cniVersion: "1.0.0", name: n.name, plugins }, null, 2));
  return file;
}

/** Deletes the test's bridge (the bridge plugin never removes it); no error if it is not there. */
export function removeBridge(bridge: string): void {
  try {
    execFileSync("ip", ["link", "del", bridge], { stdio: "ignore" });
  } catch {
    // never created
  }
}

/** iptables-save for one table without counters or comments: stable lines to compare. */
export function iptablesRules(table: "nat" | "filter"): string[] {
  const out = execFileSync("iptables-save", ["-t", table], { encoding: "utf8", timeout: 10_000 });
  return out
    .split("\n")
    .filter((l) => l && !l.startsWith("#") && l !== "COMMIT" && !l.startsWith("*"))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ""));
}

/** The named network namespaces (`ip netns list`, names only). */
export function netnsNames(): string[] {
  const out = execFileSync("ip", ["netns", "list"], { encoding: "utf8", timeout: 5000 });
  return out
    .split("\n")
    .map((l) => l.split(" ")[0]!.trim())
    .filter(Boolean);
}

/** Interface names in the host namespace (`ip -o link`). */
export function hostLinks(): string[] {
  const out = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8", timeout: 5000 });
  return out
    .split("\n")
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((s): s is string => !!s);
}
