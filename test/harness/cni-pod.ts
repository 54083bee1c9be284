// A pod network made by Debian's CNI plugins (bridge + host-local IPAM) the way containerd's CRI
// plugin would make it — except that the plugins run inside a private "node" namespace, so the
// bridge, its gateway address and the veth host ends never touch this machine's own network.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { netUnavailable, sh, TestNetns } from "./testnet.ts";

export const CNI_DIR = "/usr/lib/cni";

/** Why CNI tests cannot run here, or undefined. */
export function cniUnavailable(): string | undefined {
  const why = netUnavailable();
  if (why) return why;
  for (const p of ["bridge", "host-local"]) {
    if (!existsSync(join(CNI_DIR, p))) return `CNI plugin ${p} missing (apt-get install containernetworking-plugins)`;
  }
  return undefined;
}

interface CniResult {
  ips?: { address: string; gateway?: string }[];
}

/** Runs the bridge plugin inside `node`, as CRI would run it on a node. */
function runBridge(
  node: TestNetns,
  command: "ADD" | "DEL",
  podNetns: string,
  id: string,
  conf: object,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", node.name, join(CNI_DIR, "bridge")], {
      env: {
        PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
        CNI_COMMAND: command,
        CNI_CONTAINERID: id,
        CNI_NETNS: podNetns,
        CNI_IFNAME: "eth0",
        CNI_PATH: CNI_DIR,
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += String(d);
    });
    child.stderr.on("data", (d) => {
      err += String(d);
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`CNI ${command} failed (${code}): ${out} ${err}`));
    });
    child.stdin.end(JSON.stringify(conf));
  });
}

export class CniPod {
  private added = false;
  private constructor(
    readonly node: TestNetns,
    readonly pod: TestNetns,
    private readonly ipamDir: string,
    private readonly conf: object,
    private readonly id: string,
    /** The pod's address (from host-local) and the bridge's (the gateway). */
    public ip = "",
    readonly gateway = "",
  ) {}

  /** `subnet24` like "10.250.9": the /24 used inside the private namespaces. */
  static async create(tag: string, subnet24: string, bridge = "cvtbr0"): Promise<CniPod> {
    const node = TestNetns.create(`${tag}-node`);
    const pod = TestNetns.create(`${tag}-pod`);
    const ipamDir = mkdtempSync(join(tmpdir(), "cove-ipam-"));
    const gateway = `${subnet24}.1`;
    const conf = {
      cniVersion: "1.0.0",
      name: `cove-test-${tag}`,
      type: "bridge",
      bridge,
      isGateway: true,
      ipMasq: false,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: `${subnet24}.0/24`, gateway }]],
        routes: [{ dst: "0.0.0.0/0" }],
        dataDir: ipamDir,
      },
    };
    const p = new CniPod(node, pod, ipamDir, conf, `cove-test-${tag}-${process.pid}`, "", gateway);
    try {
      const res = JSON.parse(await runBridge(node, "ADD", pod.path, p.id, conf)) as CniResult;
      p.added = true;
      p.ip = res.ips?.[0]?.address.split("/")[0] ?? "";
      if (!p.ip.startsWith(`${subnet24}.`)) throw new Error(`CNI gave no address in ${subnet24}.0/24`);
    } catch (e) {
      await p.remove();
      throw e;
    }
    return p;
  }

  /** CNI DEL, then both namespaces and the IPAM store. */
  async remove(): Promise<void> {
    try {
      if (this.added) await runBridge(this.node, "DEL", this.pod.path, this.id, this.conf);
      this.added = false;
    } finally {
      this.pod.remove();
      this.node.remove();
      rmSync(this.ipamDir, { recursive: true, force: true });
    }
  }
}

/** The host's iptables rules (no counters), to show a test added none. */
export function iptablesRules(): string {
  try {
    return sh("iptables-save", [])
      .split("\n")
      .filter((l) => l.startsWith("-A") || l.startsWith(":") || l.startsWith("*"))
      .map((l) => l.replace(/\[\d+:\d+\]/, ""))
      .join("\n");
  } catch {
    return "(iptables unavailable)";
  }
}
