// The pod sandbox as the Task service's TaskRuntime: configuration for the pod, its guest artifacts,
// the hypervisor backend, and (in later issues) the VM and the agent inside it.
import type { Logger } from "pino";
import { ConfigError, type CoveConfig, loadConfig } from "../config/config.ts";
import { messageType } from "../proto/root.ts";
import type { AnyValue, CreateSpec, ExecSpec, RuntimeEvents, TaskRuntime } from "../shim/runtime.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import { backendFactory, chooseBackend, type HostKvm, probeHost } from "./backend.ts";
import { checkGuestArtifacts } from "./guest.ts";

export interface SandboxOptions {
  logger: Logger;
  /** cove.toml path the shim was started with (runtime options of `start`), if any. */
  configPath?: string;
  /** Host probe (tests). */
  probe?: () => HostKvm;
}

/** config_path from a runtimeoptions.v1.Options Any, if that is what the options are. */
export function configPathFromOptions(options: AnyValue | undefined): string | undefined {
  if (!options?.type_url) return undefined;
  const name = options.type_url.slice(options.type_url.lastIndexOf("/") + 1);
  if (name !== "runtimeoptions.v1.Options") return undefined;
  const T = messageType("runtimeoptions.v1.Options");
  const o = T.toObject(T.decode(options.value)) as { config_path?: string };
  return o.config_path || undefined;
}

export class SandboxRuntime implements TaskRuntime {
  protected events?: RuntimeEvents;

  constructor(private readonly opts: SandboxOptions) {}

  setEvents(events: RuntimeEvents): void {
    this.events = events;
  }

  private config(spec: CreateSpec): CoveConfig {
    const configPath = configPathFromOptions(spec.options) ?? this.opts.configPath;
    try {
      return loadConfig({ configPath });
    } catch (e) {
      if (e instanceof ConfigError) throw new TtrpcError(Code.FAILED_PRECONDITION, e.message);
      throw e;
    }
  }

  async create(spec: CreateSpec): Promise<{ pid: number }> {
    const log = this.opts.logger;
    const config = this.config(spec);
    log.info({ id: spec.id, config: config.source, hypervisor: config.hypervisor }, "pod config loaded");
    checkGuestArtifacts(config);
    const host = (this.opts.probe ?? probeHost)();
    const choice = chooseBackend(config.hypervisor, host);
    log.info(
      { id: spec.id, backend: choice.kind, accel: choice.accel, reason: choice.reason },
      "hypervisor backend chosen",
    );
    const hypervisor = backendFactory(choice)(config, choice);
    // Assembling the VM (rootfs as block devices, vsock) and creating the container through the
    // guest agent come with the VM issues; until then nothing is started, so nothing stays behind.
    throw new TtrpcError(
      Code.UNIMPLEMENTED,
      `cove cannot create ${spec.id}: the ${hypervisor.name} backend is available, but starting the pod VM and its agent is not wired into the sandbox in this build`,
    );
  }

  private notCreated(id: string): never {
    throw new TtrpcError(Code.NOT_FOUND, `container ${id}: container not created: not found`);
  }

  async start(id: string, _execId: string): Promise<{ pid: number }> {
    this.notCreated(id);
  }
  async exec(id: string, _execId: string, _spec: ExecSpec): Promise<void> {
    this.notCreated(id);
  }
  async kill(id: string): Promise<void> {
    this.notCreated(id);
  }
  async delete(_id: string, _execId: string): Promise<void> {
    // Nothing is held per container until the VM exists.
  }
  async pids(id: string): Promise<{ pid: number }[]> {
    this.notCreated(id);
  }
  async pause(id: string): Promise<void> {
    this.notCreated(id);
  }
  async resume(id: string): Promise<void> {
    this.notCreated(id);
  }
  async resizePty(id: string): Promise<void> {
    this.notCreated(id);
  }
  async closeIO(id: string): Promise<void> {
    this.notCreated(id);
  }
  async update(id: string): Promise<void> {
    this.notCreated(id);
  }
  async stats(id: string): Promise<AnyValue> {
    this.notCreated(id);
  }

  async shutdown(): Promise<void> {
    // No VM outlives create() yet; exits and OOMs will be reported through this.events.
    this.events = undefined;
  }
}
