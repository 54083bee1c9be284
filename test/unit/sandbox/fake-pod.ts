// A fake pod for the sandbox runtime's own tests: a hypervisor whose VMs are a ttrpc server speaking
// cove.agent.v1.Agent (a fake agent that keeps containers and processes in memory) on Unix sockets,
// a fake pod network and fake disk image makers. Every acquisition is recorded so that a test can
// check what is still held; any agent method, VM start or host step can be made to fail.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect as netConnect, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type Duplex, PassThrough } from "node:stream";
import type { Logger } from "pino";
import type { ExtentPlace, Hypervisor, RunningVm, VmConfig, VmExit } from "../../../src/hypervisor/types.ts";
import type { PodNetwork } from "../../../src/network/pod-network.ts";
import type { LayerImage, LayerSource } from "../../../src/rootfs/layers.ts";
import { AGENT_PORT, STDIO_PORT } from "../../../src/sandbox/agent/index.ts";
import type { PodBootDeps } from "../../../src/sandbox/pod-boot.ts";
import type { AnyValue, ExitEvent, RuntimeEvents } from "../../../src/shim/runtime.ts";
import { Code, type Handler, TtrpcError, TtrpcServer } from "../../../src/ttrpc/index.ts";

type Req = Record<string, unknown>;

interface FakeProc {
  pid: number;
  exit?: number;
  waiters: Array<() => void>;
}

/** Rejects when the call's connection closes or its deadline passes (long polls must not leak). */
function until<T>(signal: AbortSignal, p: Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) reject(new TtrpcError(Code.CANCELLED, "cancelled"));
    signal.addEventListener("abort", () => reject(new TtrpcError(Code.CANCELLED, "cancelled")), { once: true });
    p.then(resolve, reject);
  });
}

/** The guest agent as the runtime sees it: containers, processes, exits; `failOn` injects errors. */
export class FakeAgent {
  readonly calls: string[] = [];
  /** ResizeTty requests, as received. */
  readonly resizes: Req[] = [];
  readonly failOn = new Map<string, TtrpcError>();
  /** Answers nothing (the VM is up but the agent hangs), for Check only. */
  silent = false;
  /** Methods that never answer (until the call's deadline or connection ends). */
  readonly hang = new Set<string>();
  readonly containers = new Map<string, Map<string, FakeProc>>();
  sandbox = false;
  private nextPid = 100;
  private oomWaiter?: (id: string) => void;
  readonly pendingOoms: string[] = [];
  /** Every CreateContainer request, in order. */
  readonly creates: Req[] = [];

  private proc(req: Req): FakeProc {
    const c = this.containers.get(String(req.container_id));
    const p = c?.get(String(req.exec_id ?? ""));
    if (!p) throw new TtrpcError(Code.NOT_FOUND, `process ${req.container_id}/${req.exec_id}: not found`);
    return p;
  }

  /** The process ends with `status` (as if the guest process exited). */
  exit(containerId: string, execId: string, status: number): void {
    const p = this.containers.get(containerId)?.get(execId);
    if (!p || p.exit !== undefined) return;
    p.exit = status;
    for (const w of p.waiters.splice(0)) w();
  }

  oom(containerId: string): void {
    const w = this.oomWaiter;
    this.oomWaiter = undefined;
    if (w) w(containerId);
    else this.pendingOoms.push(containerId);
  }

  handlers(): Record<string, Handler<Req, Req>> {
    const h: Record<string, Handler<Req, Req>> = {
      Check: async (_req, ctx) => {
        if (this.silent) await until(ctx.signal, new Promise(() => undefined));
        return { version: "fake", runtime: "fake", uptime_ms: 1, sandbox: this.sandbox, containers: 0 };
      },
      CreateSandbox: async () => {
        this.sandbox = true;
        return {};
      },
      DestroySandbox: async () => {
        this.sandbox = false;
        return {};
      },
      CreateContainer: async (req) => {
        this.creates.push(req);
        const id = String(req.container_id);
        if (this.containers.has(id)) throw new TtrpcError(Code.ALREADY_EXISTS, `container ${id}`);
        const pid = this.nextPid++;
        this.containers.set(id, new Map([["", { pid, waiters: [] }]]));
        return { pid };
      },
      StartContainer: async (req) => ({ pid: this.proc({ ...req, exec_id: "" }).pid }),
      ExecProcess: async (req) => {
        const c = this.containers.get(String(req.container_id));
        if (!c) throw new TtrpcError(Code.NOT_FOUND, `container ${req.container_id}`);
        const pid = this.nextPid++;
        c.set(String(req.exec_id), { pid, waiters: [] });
        return { pid };
      },
      SignalProcess: async (req) => {
        this.proc(req);
        this.exit(String(req.container_id), String(req.exec_id), 128 + Number(req.signal));
        return {};
      },
      WaitProcess: async (req, ctx) => {
        const p = this.proc(req);
        if (p.exit === undefined) await until(ctx.signal, new Promise<void>((r) => p.waiters.push(r)));
        return { pid: p.pid, exit_status: p.exit, exited_at: { seconds: 1_700_000_000, nanos: 5_000_000 } };
      },
      DeleteProcess: async (req) => {
        const p = this.proc(req);
        this.containers.get(String(req.container_id))?.delete(String(req.exec_id));
        return { pid: p.pid, exit_status: p.exit ?? 0, exited_at: null };
      },
      RemoveContainer: async (req) => {
        if (!this.containers.delete(String(req.container_id)))
          throw new TtrpcError(Code.NOT_FOUND, `container ${req.container_id}: not found`);
        return {};
      },
      PauseContainer: async () => ({}),
      ResumeContainer: async () => ({}),
      UpdateContainer: async () => ({}),
      ListPids: async (req) => {
        const c = this.containers.get(String(req.container_id));
        if (!c) throw new TtrpcError(Code.NOT_FOUND, `container ${req.container_id}`);
        return { pids: [...c].map(([exec_id, p]) => ({ pid: p.pid, exec_id, known: true })) };
      },
      StatsContainer: async () => ({ metrics: { pids: { current: 3, limit: 0 } } }),
      ResizeTty: async (req) => {
        this.resizes.push(req);
        return {};
      },
      CloseStdin: async () => ({}),
      GetOOMEvent: async (_req, ctx) => {
        const queued = this.pendingOoms.shift();
        if (queued) return { container_id: queued };
        const id = await until(
          ctx.signal,
          new Promise<string>((r) => {
            this.oomWaiter = r;
          }),
        );
        return { container_id: id };
      },
      ConfigureNetwork: async () => ({ interfaces: [] }),
      SyncFiles: async () => ({}),
    };
    const out: Record<string, Handler<Req, Req>> = {};
    for (const [name, fn] of Object.entries(h)) {
      out[name] = async (req, ctx) => {
        this.calls.push(name);
        if (this.hang.has(name)) await until(ctx.signal, new Promise(() => undefined));
        const err = this.failOn.get(name);
        if (err) throw err;
        return fn(req, ctx);
      };
    }
    return out;
  }
}

/** One fake VM: the agent's ttrpc and stdio ports on Unix sockets in its own dir. */
export class FakeVm implements RunningVm {
  readonly console = new PassThrough();
  readonly media = new Map<string, string | undefined>();
  private readonly servers: Server[] = [];
  private readonly ttrpc: TtrpcServer;
  private readonly conns = new Set<Duplex>();
  private exit?: VmExit;
  private readonly exited: Promise<VmExit>;
  private onExit!: (e: VmExit) => void;
  killed = false;

  constructor(
    readonly pid: number,
    readonly config: VmConfig,
    readonly agent: FakeAgent,
    private readonly dir: string,
  ) {
    this.exited = new Promise((r) => {
      this.onExit = r;
    });
    for (const d of config.disks) this.media.set(d.id, d.path);
    this.ttrpc = new TtrpcServer();
    this.ttrpc.registerService("cove.agent.v1.Agent", agent.handlers());
    this.listen(this.sock(AGENT_PORT), (s) => this.ttrpc.serve(s));
    // The stdio port: accept the header; the tests' processes print nothing.
    this.listen(this.sock(STDIO_PORT), (s) => {
      s.once("data", () => s.end("ok\n"));
    });
  }

  private sock(port: number): string {
    return join(this.dir, `${port}.sock`);
  }

  private listen(path: string, onConn: (s: Duplex) => void): void {
    const srv = createServer({ allowHalfOpen: true }, (s) => {
      this.conns.add(s);
      s.on("close", () => this.conns.delete(s));
      s.on("error", () => undefined);
      onConn(s);
    });
    srv.listen(path);
    this.servers.push(srv);
  }

  connectVsock(port: number): Promise<Duplex> {
    if (this.exit) return Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
    return new Promise((resolve, reject) => {
      const s = netConnect({ path: this.sock(port), allowHalfOpen: true });
      s.once("connect", () => {
        s.off("error", reject);
        resolve(s);
      });
      s.once("error", reject);
    });
  }

  listenVsock(): () => void {
    return () => undefined;
  }

  async changeMedia(diskId: string, path: string | undefined): Promise<void> {
    if (this.exit) throw new Error("the VM has exited");
    this.media.set(diskId, path);
  }

  /** Files attached to each disk of extents, by partition number. */
  readonly extents = new Map<string, Map<number, string>>();

  async addExtent(diskId: string, path: string): Promise<ExtentPlace> {
    if (this.exit) throw new Error("the VM has exited");
    const d = this.extents.get(diskId) ?? new Map<number, string>();
    this.extents.set(diskId, d);
    let index = 1;
    while (d.has(index)) index++;
    d.set(index, path);
    return { start: index * 2048, sectors: 8, index };
  }

  async removeExtent(diskId: string, index: number): Promise<void> {
    if (this.exit) throw new Error("the VM has exited");
    this.extents.get(diskId)?.delete(index);
  }

  /** The VM goes away on its own (a guest panic, the VMM crashing). */
  die(code = 1): void {
    this.end({ code, signal: null });
  }

  private end(e: VmExit): void {
    if (this.exit) return;
    this.exit = e;
    for (const srv of this.servers) srv.close();
    for (const c of this.conns) c.destroy();
    void this.ttrpc.close();
    this.console.end();
    this.onExit(e);
  }

  async stop(): Promise<VmExit> {
    return this.kill();
  }

  async kill(): Promise<VmExit> {
    this.killed = true;
    this.end({ code: null, signal: "SIGKILL" });
    return this.exited;
  }

  wait(): Promise<VmExit> {
    return this.exited;
  }

  get running(): boolean {
    return !this.exit;
  }
}

export class FakeHypervisor implements Hypervisor {
  readonly name = "fake";
  readonly nets = true;
  /** undefined: no device limit. */
  maxDevices?: number;
  readonly vms: FakeVm[] = [];
  /** Makes start() reject. */
  failStart?: Error;
  /** The VM starts, then exits before its agent answers. */
  dieAtBoot = false;
  /** Configures each VM's agent before it answers. */
  onAgent: (a: FakeAgent) => void = () => undefined;
  private nextPid = 40_000;

  constructor(private readonly dir: string) {}

  async start(config: VmConfig): Promise<RunningVm> {
    if (this.failStart) throw this.failStart;
    const d = join(this.dir, `vm${this.vms.length}`);
    mkdirSync(d, { recursive: true });
    const agent = new FakeAgent();
    this.onAgent(agent);
    const vm = new FakeVm(this.nextPid++, config, agent, d);
    this.vms.push(vm);
    if (this.dieAtBoot) setImmediate(() => vm.die(1));
    return vm;
  }

  /** VMs that were started and not stopped or gone. */
  get running(): FakeVm[] {
    return this.vms.filter((v) => v.running);
  }
}

/** A pod network with one interface; attach and detach recorded. */
export class FakeNetworks {
  attached = 0;
  detached = 0;
  failAttach?: Error;

  get held(): number {
    return this.attached - this.detached;
  }

  attach = async (netns: string): Promise<PodNetwork> => {
    if (this.failAttach) throw this.failAttach;
    this.attached++;
    let detached = false;
    const net = {
      netns,
      interfaces: [{ name: "eth0", mac: "02:00:00:00:00:01", mtu: 1500, addresses: [], tap: { name: "cvtap0" } }],
      record: () => ({ netns, interfaces: [] }),
      guestConfig: () => ({ interfaces: [{ mac: "02:00:00:00:00:01", name: "eth0" }] }),
      detach: async () => {
        if (detached) return;
        detached = true;
        this.detached++;
      },
    };
    return net as unknown as PodNetwork;
  };
}

/** Layer images and writable layers as empty files; `failWritable` makes the writable layer fail. */
export class FakeDisks {
  failWritable?: Error;
  failLayer?: Error;
  readonly made: string[] = [];

  layerImage = async (cacheDir: string, src: LayerSource, _log: Logger): Promise<LayerImage> => {
    if (this.failLayer) throw this.failLayer;
    const key = Buffer.from(src.dir).toString("hex").slice(-12);
    const path = join(cacheDir, "layers", `${key}.erofs`);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, "");
    return { key, path, built: true, ms: 0 };
  };

  createWritableLayer = async (path: string): Promise<void> => {
    if (this.failWritable) throw this.failWritable;
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, "");
    this.made.push(path);
  };
}

/** Exit and OOM events as the runtime reports them. */
export class RecordedEvents implements RuntimeEvents {
  readonly exits: ExitEvent[] = [];
  readonly ooms: string[] = [];
  private waiters: Array<() => void> = [];

  exit(e: ExitEvent): void {
    this.exits.push(e);
    for (const w of this.waiters.splice(0)) w();
  }

  oom(id: string): void {
    this.ooms.push(id);
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once `ok()` holds, or rejects after `ms`. */
  async until(ok: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error("timed out waiting for an event");
      await new Promise<void>((r) => {
        const t = setTimeout(r, 20);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

/** A temp dir with a cove config whose guest kernel and image exist, and the boot deps pointing there. */
export function fakeHost(): {
  dir: string;
  configPath: string;
  runDir: string;
  hypervisor: FakeHypervisor;
  networks: FakeNetworks;
  disks: FakeDisks;
  deps: Partial<PodBootDeps>;
  cleanup: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), "cove-sandbox-"));
  mkdirSync(join(dir, "guest"));
  writeFileSync(join(dir, "guest", "kernel"), "k");
  writeFileSync(join(dir, "guest", "rootfs.erofs"), "i");
  const configPath = join(dir, "cove.toml");
  writeFileSync(configPath, `cache_dir = "${dir}"\nhypervisor = "embedded"\n`);
  const runDir = join(dir, "run");
  const hypervisor = new FakeHypervisor(join(dir, "vms"));
  const networks = new FakeNetworks();
  const disks = new FakeDisks();
  return {
    dir,
    configPath,
    runDir,
    hypervisor,
    networks,
    disks,
    deps: {
      probe: () => ({ kvm: true, hwVirt: "vmx", pvm: false }),
      attachNetwork: networks.attach,
      diskMakers: { layerImage: disks.layerImage, createWritableLayer: disks.createWritableLayer },
      runDir,
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A bundle with an OCI spec: a CRI sandbox, or a container; in a netns of its own or a fresh one. */
export function writeBundle(
  root: string,
  id: string,
  o: { sandbox?: boolean; netns?: string; hostname?: string } = {},
): { id: string; bundle: string; rootfs: { type: string; source: string; target: string; options: string[] }[] } {
  const bundle = join(root, "bundles", id);
  mkdirSync(bundle, { recursive: true });
  const spec = {
    ociVersion: "1.1.0",
    hostname: o.hostname,
    process: { args: ["/bin/true"], cwd: "/" },
    annotations: o.sandbox ? { "io.kubernetes.cri.container-type": "sandbox" } : {},
    linux: {
      namespaces: [{ type: "network", ...(o.netns ? { path: o.netns } : {}) }],
      sysctl: { "net.ipv4.ip_forward": "1" },
    },
  };
  writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
  const rootfs = [
    {
      type: "overlay",
      source: "overlay",
      target: "",
      options: [`lowerdir=${join(root, "l1")}:${join(root, "l2")}`, "upperdir=/u", "workdir=/w"],
    },
  ];
  return { id, bundle, rootfs };
}

export function createSpec(b: ReturnType<typeof writeBundle>, options?: AnyValue) {
  return {
    id: b.id,
    bundle: b.bundle,
    rootfs: b.rootfs,
    checkpoint: "",
    stdin: "",
    stdout: "",
    stderr: "",
    terminal: false,
    ...(options ? { options } : {}),
  };
}
