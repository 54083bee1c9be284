// Runs probe.sh as a container's process through ctr or through CRI and parses what it printed
// into sections (compare.ts judges two of them).
//
//   const runc = await probeCtr(cd, "io.containerd.runc.v2", "p-runc", ["--memory-limit", "134217728"]);
//   const cove = await probeCtr(cd, COVE_RUNTIME_TYPE, "p-cove", [...], ["--runtime-config-path", cfg]);
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Containerd } from "../containerd.ts";
import type { ContainerConfig, CriClient, PodSandboxConfig } from "../cri.ts";
import { BUSYBOX_IMAGE_REF } from "../image.ts";
import { waitFor } from "../processes.ts";

export const PROBE_SCRIPT = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "probe.sh"), "utf8");

/** Section name → its lines, in the order printed. */
export type Probe = Map<string, string[]>;

export function parseProbe(text: string): Probe {
  const out: Probe = new Map();
  let cur: string[] | undefined;
  for (const line of text.split("\n")) {
    const head = /^== (.+)$/.exec(line);
    if (head) {
      cur = [];
      out.set(head[1]!, cur);
    } else if (cur && line !== "") cur.push(line);
  }
  return out;
}

/** `ctr run --rm [flags] <image> <id> sh -c <probe>` with the given runtime; throws unless it exits 0. */
export async function probeCtr(
  cd: Containerd,
  runtime: string,
  id: string,
  flags: string[],
  runtimeFlags: string[] = [],
): Promise<Probe> {
  const r = await cd.ctr(
    [
      "run",
      "--rm",
      ...flags,
      "--runtime",
      runtime,
      ...runtimeFlags,
      BUSYBOX_IMAGE_REF,
      id,
      "/bin/sh",
      "-c",
      PROBE_SCRIPT,
    ],
    { timeoutMs: 180_000 },
  );
  if (r.code !== 0 || r.timedOut)
    throw new Error(`probe ${id} under ${runtime}: exit ${r.code}${r.timedOut ? " (timed out)" : ""}\n${r.stderr}`);
  return parseProbe(r.stdout);
}

/** The stdout lines of a CRI log file ("<time> stdout F|P <text>"; P = partial, joined to the next). */
export function criLogStdout(text: string): string {
  let out = "";
  for (const line of text.split("\n")) {
    const m = /^\S+ stdout ([FP]) (.*)$/.exec(line);
    if (m) out += m[1] === "F" ? `${m[2]}\n` : m[2];
  }
  return out;
}

/**
 * Creates and starts a container in `podId` (busybox; `config.args` run by `sh -c`), waits for its
 * exit, removes it, and returns its exit code and CRI-logged stdout.
 */
export async function criRun(
  cri: CriClient,
  podId: string,
  pod: PodSandboxConfig,
  name: string,
  config: Partial<ContainerConfig> = {},
): Promise<{ exit: number; out: string }> {
  if (!pod.log_directory) throw new Error("criRun: the pod needs a log_directory");
  const id = await cri.createContainer(
    podId,
    {
      metadata: { name },
      image: { image: BUSYBOX_IMAGE_REF },
      command: ["/bin/sh", "-c"],
      log_path: `${name}.log`,
      ...config,
    },
    pod,
  );
  await cri.startContainer(id);
  let status = { state: "", exit_code: 0 };
  await waitFor(
    `container ${name} to exit`,
    async () => {
      status = (await cri.containerStatus(id)).status;
      return status.state === "CONTAINER_EXITED";
    },
    120_000,
  );
  const out = criLogStdout(readFileSync(join(pod.log_directory, `${name}.log`), "utf8"));
  await cri.removeContainer(id);
  return { exit: status.exit_code, out };
}

/** criRun with the probe as the container's process; throws unless it exits 0. */
export async function probeCri(
  cri: CriClient,
  podId: string,
  pod: PodSandboxConfig,
  name: string,
  config: Partial<ContainerConfig> = {},
): Promise<Probe> {
  const r = await criRun(cri, podId, pod, name, { ...config, args: [PROBE_SCRIPT] });
  if (r.exit !== 0) throw new Error(`probe ${name}: exit ${r.exit}\n${r.out.slice(-2000)}`);
  return parseProbe(r.out);
}
