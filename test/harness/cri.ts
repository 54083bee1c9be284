// A CRI (runtime.v1) client for end-to-end tests: what kubelet would send, over containerd's gRPC
// socket, using @grpc/grpc-js and our subset of the CRI proto (cri/api.proto). Field names are
// snake_case (keepCase), 64-bit integers are strings, enums are their names.
//
//   const cri = new CriClient(cd.address);
//   const { pod_sandbox_id } = await cri.runPodSandbox(hostNetworkPod("p1"), "cove");
//   ...
//   cri.close();
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO = join(dirname(fileURLToPath(import.meta.url)), "cri", "api.proto");

type Obj = Record<string, unknown>;
type UnaryFn = (
  req: Obj,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (e: grpc.ServiceError | null, r?: Obj) => void,
) => void;
type ServiceCtor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client;

let pkgCache: { RuntimeService: ServiceCtor; ImageService: ServiceCtor } | undefined;

function criPackage(): { RuntimeService: ServiceCtor; ImageService: ServiceCtor } {
  if (pkgCache) return pkgCache;
  const def = protoLoader.loadSync(PROTO, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(def) as unknown as {
    runtime: { v1: { RuntimeService: ServiceCtor; ImageService: ServiceCtor } };
  };
  pkgCache = loaded.runtime.v1;
  return pkgCache;
}

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  log_directory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: Obj;
  [k: string]: unknown;
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: { key: string; value: string }[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  log_path?: string;
  linux?: Obj;
  [k: string]: unknown;
}

export interface VersionResponse {
  version: string;
  runtime_name: string;
  runtime_version: string;
  runtime_api_version: string;
}

export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exit_code: number;
}

export interface ContainerSummary {
  id: string;
  pod_sandbox_id: string;
  metadata: { name: string; attempt: number };
  state: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

/** A pod on the host network (no CNI needed), with a unique uid. */
export function hostNetworkPod(name: string, extra: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  return {
    metadata: { name, uid: `${name}-${process.pid}-${Date.now()}`, namespace: "default", attempt: 0 },
    linux: { security_context: { namespace_options: { network: "NODE", pid: "CONTAINER", ipc: "POD" } } },
    ...extra,
  };
}

export class CriClient {
  private readonly runtime: grpc.Client;
  private readonly images: grpc.Client;
  /** Per-call deadline (ms) unless a call passes its own. */
  defaultTimeoutMs = 60_000;

  /** `address` is containerd's gRPC socket path. */
  constructor(address: string) {
    const pkg = criPackage();
    const target = `unix://${address}`;
    this.runtime = new pkg.RuntimeService(target, grpc.credentials.createInsecure());
    this.images = new pkg.ImageService(target, grpc.credentials.createInsecure());
  }

  /** Any RuntimeService / ImageService method by name, with a deadline. */
  call<Res = Obj>(
    service: "runtime" | "image",
    method: string,
    req: Obj,
    timeoutMs = this.defaultTimeoutMs,
  ): Promise<Res> {
    const client = service === "runtime" ? this.runtime : this.images;
    const fn = (client as unknown as Record<string, UnaryFn | undefined>)[method];
    if (typeof fn !== "function")
      throw new Error(`CRI ${service} service has no method ${method} (add it to cri/api.proto)`);
    return new Promise((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new Error(`CRI ${method}: ${err.details || err.message} (code ${err.code})`, { cause: err }));
        else resolve(res as Res);
      });
    });
  }

  version(): Promise<VersionResponse> {
    return this.call("runtime", "Version", { version: "v1" });
  }

  status(): Promise<{ status: { conditions: { type: string; status: boolean; reason: string; message: string }[] } }> {
    return this.call("runtime", "Status", {});
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ""): Promise<string> {
    const r = await this.call<{ pod_sandbox_id: string }>("runtime", "RunPodSandbox", {
      config,
      runtime_handler: runtimeHandler,
    });
    return r.pod_sandbox_id;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call("runtime", "StopPodSandbox", { pod_sandbox_id: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call("runtime", "RemovePodSandbox", { pod_sandbox_id: id });
  }

  podSandboxStatus(id: string): Promise<{ status: { id: string; state: string; runtime_handler: string } }> {
    return this.call("runtime", "PodSandboxStatus", { pod_sandbox_id: id });
  }

  async createContainer(podId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    const r = await this.call<{ container_id: string }>("runtime", "CreateContainer", {
      pod_sandbox_id: podId,
      config,
      sandbox_config: sandboxConfig,
    });
    return r.container_id;
  }

  async startContainer(id: string): Promise<void> {
    await this.call("runtime", "StartContainer", { container_id: id });
  }

  async stopContainer(id: string, timeoutSec = 0): Promise<void> {
    await this.call("runtime", "StopContainer", { container_id: id, timeout: String(timeoutSec) });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call("runtime", "RemoveContainer", { container_id: id });
  }

  async listContainers(filter: Obj = {}): Promise<ContainerSummary[]> {
    const r = await this.call<{ containers: ContainerSummary[] }>("runtime", "ListContainers", { filter });
    return r.containers;
  }

  containerStatus(
    id: string,
  ): Promise<{ status: { id: string; state: string; exit_code: number; reason: string; message: string } }> {
    return this.call("runtime", "ContainerStatus", { container_id: id });
  }

  /** Runs cmd in the container; `timeoutSec` is the CRI-side timeout, the gRPC deadline adds 30 s. */
  execSync(id: string, cmd: string[], timeoutSec = 30): Promise<ExecSyncResponse> {
    return this.call(
      "runtime",
      "ExecSync",
      { container_id: id, cmd, timeout: String(timeoutSec) },
      (timeoutSec + 30) * 1000,
    );
  }

  containerStats(id: string): Promise<{ stats: Obj }> {
    return this.call("runtime", "ContainerStats", { container_id: id });
  }

  listImages(): Promise<{ images: { id: string; repo_tags: string[]; size: string }[] }> {
    return this.call("image", "ListImages", {});
  }

  close(): void {
    this.runtime.close();
    this.images.close();
  }
}
