// What `start` prints, per containerd version: the highest shim protocol the calling containerd
// accepts (docs/containerd.md has the wire facts):
//   - 1.6 sets no MAX_SHIM_VERSION and takes stdout as the bare address (version 2, ttrpc);
//   - 1.7 sets MAX_SHIM_VERSION=2 and rejects a version above 2: JSON {"version":2,...};
//   - 2.0–2.2 set MAX_SHIM_VERSION=2 too (nobody reads it), but accept version 3 (Task API v3 and
//     grouped containers: later containers of a pod get no `start`): JSON {"version":3,...}. As the
//     environment cannot tell 1.7 from 2.x, the calling containerd binary (-publish-binary) is asked
//     for its version;
//   - 2.3+ passes BootstrapParams on stdin and reads a protobuf BootstrapResult first.
import { spawnSync } from "node:child_process";
import protobuf from "protobufjs/minimal.js";
import type { StartOptions } from "./options.ts";

/** The newest shim protocol cove speaks: Task API v3 beside v2. */
export const SHIM_PROTOCOL_VERSION = 3;

export interface Caller {
  /** stdin carried BootstrapParams (containerd 2.3+). */
  bootstrap: boolean;
  /** $MAX_SHIM_VERSION, when set (containerd 1.7+). */
  maxShimVersion?: number;
  /** The calling containerd's major version, when known. */
  containerdMajor?: number;
}

export type StartAnswer =
  | { form: "bare"; version: 2 }
  | { form: "json"; version: 2 | 3 }
  | { form: "bootstrap-result"; version: 3 };

/** Which answer the caller accepts, highest version first. */
export function startAnswerFor(c: Caller): StartAnswer {
  if (c.bootstrap) return { form: "bootstrap-result", version: 3 };
  if (c.maxShimVersion === undefined) return { form: "bare", version: 2 };
  if (c.maxShimVersion >= SHIM_PROTOCOL_VERSION || (c.containerdMajor ?? 0) >= 2) return { form: "json", version: 3 };
  return { form: "json", version: 2 };
}

/** BootstrapResult{version=1, address=2, protocol=3} (containerd's api/runtime/bootstrap/v1). */
export function encodeBootstrapResult(version: number, address: string, protocol: string): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 0).int32(version);
  w.uint32((2 << 3) | 2).string(address);
  w.uint32((3 << 3) | 2).string(protocol);
  return w.finish();
}

/** The bytes `start` prints for address. */
export function encodeStartAnswer(a: StartAnswer, address: string): Uint8Array {
  switch (a.form) {
    case "bare":
      return Buffer.from(address);
    case "json":
      return Buffer.from(JSON.stringify({ version: a.version, address, protocol: "ttrpc" }));
    case "bootstrap-result":
      return encodeBootstrapResult(a.version, address, "ttrpc");
  }
}

/**
 * The major version in `containerd --version` output ("containerd github.com/containerd/containerd/v2
 * 2.1.9+unknown", "containerd github.com/containerd/containerd 1.7.24~ds1 …") or in a bare version.
 */
export function containerdMajor(text: string): number | undefined {
  const m = /^\s*(?:containerd\s+(\S+)\s+)?v?(\d+)\.\d+/.exec(text);
  if (!m) return undefined;
  const major = Number(m[2]);
  // The Go module path carries the major version from 2 on.
  const fromModule = /\/v(\d+)$/.exec(m[1] ?? "");
  return fromModule ? Math.max(major, Number(fromModule[1])) : major;
}

/** Runs `<binary> --version` (a Go binary: ~10–20 ms); undefined when it cannot tell. */
export function probeContainerdMajor(binary: string): number | undefined {
  if (!binary) return undefined;
  const r = spawnSync(binary, ["--version"], { encoding: "utf8", timeout: 5000, stdio: ["ignore", "pipe", "ignore"] });
  return r.status === 0 ? containerdMajor(r.stdout) : undefined;
}

/** The caller of `start`, from its environment, stdin and -publish-binary. */
export function callerOf(
  env: NodeJS.ProcessEnv,
  opts: StartOptions,
  publishBinary: string,
  probe: (binary: string) => number | undefined = probeContainerdMajor,
): Caller {
  const bootstrap = opts.form === "bootstrap" || opts.form === "bootstrap-json";
  const raw = env.MAX_SHIM_VERSION;
  const max = raw !== undefined && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : undefined;
  const c: Caller = { bootstrap, maxShimVersion: max };
  // Only 1.7 and 2.0–2.2 look alike (MAX_SHIM_VERSION=2, no bootstrap): ask the binary then.
  if (!bootstrap && max !== undefined && max < SHIM_PROTOCOL_VERSION) c.containerdMajor = probe(publishBinary);
  return c;
}
