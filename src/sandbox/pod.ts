// One pod's microVM: booted on the chosen backend from the guest kernel + image, with the pod's
// disks (the guest image, and the two disks of extents for containers) and a vsock device; ready when the agent answers on vsock port 1024.
import { createHash } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { CoveError, errorMessage, TimeoutError, UnavailableError } from "../common/errors.ts";
import { printable } from "../common/text.ts";
import type { CoveConfig } from "../config/config.ts";
import { guestCmdline } from "../guest/cmdline.ts";
import type { ExtentPlace, Hypervisor, NetConfig, RunningVm, VmExit } from "../hypervisor/types.ts";
import type { NetRecord } from "../network/pod-network.ts";
import { TtrpcError } from "../ttrpc/index.ts";
import { agentCmdlineParams, followGuestLog, type GuestLogReader } from "./agent/guest-log.ts";
import { AGENT_PORT, AgentClient, type AgentClientOptions, vsockDialer } from "./agent/index.ts";
import { PodDisks } from "./disks.ts";
import { VM_RUN_DIR } from "./run-state.ts";

export { VM_RUN_DIR };
/** Files in the VM's work dir that `delete` reads should the shim die (src/sandbox/cleanup.ts). */
export const VMM_PID_FILE = "vmm.pid";
export const NET_STATE_FILE = "net.json";
export const GUEST_CID = 3;
const CONSOLE_TAIL = 8192;
/** The console tail in an error to containerd: the guest's last words, bounded and escaped. */
const CONSOLE_IN_ERROR = 2000;

/** Where a pod's VM keeps its sockets: short (Unix socket paths), derived from the pod's first bundle. */
export function vmWorkDir(bundle: string, runDir = VM_RUN_DIR): string {
  return join(runDir, createHash("sha256").update(bundle).digest("hex").slice(0, 16));
}

export interface PodBoot {
  id: string;
  bundle: string;
  /** Parent of the VM's work dir (default VM_RUN_DIR; `delete` after a shim crash looks there). */
  runDir?: string;
  hostname: string;
  config: CoveConfig;
  vcpus: number;
  memoryMib: number;
  hypervisor: Hypervisor;
  /** The pod's NICs (taps in its network namespace), if it has a network. */
  nets?: NetConfig[];
  /** What the pod network attach created, recorded for `delete` after a shim crash. */
  netRecord?: NetRecord;
  /** The agent client's deadlines (tests shorten them). */
  agent?: AgentClientOptions;
  logger: Logger;
}

export class PodVm {
  private consoleTail = "";
  exited?: VmExit;
  /** The guest's log lines into the shim log (src/sandbox/agent/guest-log.ts). */
  guestLog?: GuestLogReader;
  /** Set when we asked the VM to go (not a fault). */
  stopping = false;

  private constructor(
    readonly vm: RunningVm,
    readonly agent: AgentClient,
    readonly workDir: string,
    readonly bootMs: number,
  ) {}

  get console(): string {
    return this.consoleTail;
  }

  static async boot(b: PodBoot): Promise<PodVm> {
    const log = b.logger;
    const t0 = performance.now();
    const workDir = vmWorkDir(b.bundle, b.runDir);
    rmSync(workDir, { recursive: true, force: true });
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    // Before the VM starts: a shim killed during boot leaves the tc redirects too.
    if (b.netRecord) writeFileSync(join(workDir, NET_STATE_FILE), JSON.stringify(b.netRecord));
    let tail = "";
    let vm: RunningVm | undefined;
    try {
      vm = await b.hypervisor.start({
        id: b.id,
        kernel: b.config.guest.kernel,
        cmdline: guestCmdline({
          hostname: b.hostname,
          quiet: true,
          extra: agentCmdlineParams(log.level, b.config.debug.console),
        }),
        memoryMiB: b.memoryMib,
        vcpus: b.vcpus,
        disks: [{ id: "root", path: b.config.guest.image, readOnly: true, serial: "cove-root" }, ...PodDisks.vmDisks()],
        vsock: { guestCid: GUEST_CID, hybridSocket: join(workDir, "hybrid.vsock") },
        ...(b.nets?.length ? { nets: b.nets } : {}),
        workDir,
        logger: log,
      });
      // For the `delete` binary, should this shim die without stopping the VM (src/sandbox/cleanup.ts).
      writeFileSync(join(workDir, VMM_PID_FILE), String(vm.pid));
      vm.console.on("data", (d: Buffer) => {
        tail = (tail + d.toString()).slice(-CONSOLE_TAIL);
      });
      log.info(
        { pid: vm.pid, hypervisor: b.hypervisor.name, disks: PodDisks.vmDisks().length + 1, nics: b.nets?.length ?? 0 },
        "pod VM started",
      );
      const agent = await waitForAgent(vm, b.config.pod.bootTimeoutMs, () => tail, b.agent);
      const pod = new PodVm(vm, agent, workDir, performance.now() - t0);
      const running = vm;
      pod.guestLog = followGuestLog((port, ms) => running.connectVsock(port, ms), log.child({ pod: b.id }));
      pod.consoleTail = tail;
      vm.console.on("data", (d: Buffer) => {
        pod.consoleTail = (pod.consoleTail + d.toString()).slice(-CONSOLE_TAIL);
      });
      void vm.wait().then((e) => {
        pod.exited = e;
      });
      log.info({ boot_ms: Math.round(pod.bootMs), pid: vm.pid }, "pod VM ready: the agent answered");
      return pod;
    } catch (e) {
      if (vm) await vm.kill().catch(() => undefined);
      rmSync(workDir, { recursive: true, force: true });
      if (e instanceof TtrpcError || e instanceof CoveError) throw e; // already says what failed
      throw new UnavailableError(`cove: the pod VM did not start: ${errorMessage(e)}`);
    }
  }

  /** Adds a file to one of the pod's disks of extents (see disks.ts). */
  addExtent(diskId: string, path: string): Promise<ExtentPlace> {
    return this.vm.addExtent(diskId, path);
  }

  removeExtent(diskId: string, index: number): Promise<void> {
    return this.vm.removeExtent(diskId, index);
  }

  /** DestroySandbox (bounded), then the VM goes; files removed. */
  async destroy(log: Logger): Promise<void> {
    this.stopping = true;
    if (!this.exited) {
      try {
        await this.agent.rpc.call("cove.agent.v1.Agent", "DestroySandbox", {}, { timeoutMs: 3000 });
      } catch (e) {
        log.warn({ err: errorMessage(e) }, "DestroySandbox failed (the VM is killed anyway)");
      }
    }
    this.agent.close();
    this.guestLog?.close();
    const exit = await this.vm.kill();
    log.info({ code: exit.code, signal: exit.signal }, "pod VM stopped");
    rmSync(this.workDir, { recursive: true, force: true });
  }
}

async function waitForAgent(
  vm: RunningVm,
  timeoutMs: number,
  consoleTail: () => string,
  opts: AgentClientOptions = {},
): Promise<AgentClient> {
  const deadline = Date.now() + timeoutMs;
  // Guest text (its console, the agent's or the vsock's error) goes to containerd bounded and escaped.
  const console = () => printable(consoleTail(), CONSOLE_IN_ERROR, "end");
  let exited: VmExit | undefined;
  void vm.wait().then((e) => {
    exited = e;
  });
  let last = "";
  for (;;) {
    if (exited) {
      throw new UnavailableError(
        `cove: the pod VM exited during boot (code ${exited.code}, signal ${exited.signal}); console:\n${console()}`,
      );
    }
    if (Date.now() > deadline) {
      throw new TimeoutError(
        `cove: the guest agent did not answer on vsock port ${AGENT_PORT} within ${timeoutMs} ms (${printable(last, 512)}); console:\n${console()}`,
      );
    }
    let first: Duplex | undefined;
    try {
      first = await vm.connectVsock(AGENT_PORT, 1000);
    } catch (e) {
      last = errorMessage(e);
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const conn = first;
    let used = false;
    const dial = vsockDialer((port) => vm.connectVsock(port, 10_000));
    const agent = await AgentClient.connect(async (ch) => {
      if (ch === "rpc" && !used) {
        used = true;
        return conn;
      }
      return dial(ch);
    }, opts);
    try {
      await agent.check({ timeoutMs: Math.max(1000, Math.min(30_000, deadline - Date.now())) });
      return agent;
    } catch (e) {
      last = errorMessage(e);
      agent.close();
    }
  }
}
