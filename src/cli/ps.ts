// `cove ps`: the pods on this host, from cove's own run state (each pod VM's pod.json, written by
// its shim; src/sandbox/run-state.ts), with the VMM's pid, backend, guest memory and the host memory
// (PSS) the VMM and shim take, uptime and containers. Needs no containerd.
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import { type PodRunState, readPodStates, VM_RUN_DIR } from "../sandbox/run-state.ts";
import { type Command, UsageError } from "./command.ts";
import { formatTable } from "./table.ts";

export interface PodRow extends PodRunState {
  /** The shim still runs (its pid is alive). */
  alive: boolean;
  /** Host memory (PSS, KiB) of the VMM, plus the shim's when it is another process. */
  hostPssKib?: number;
  uptimeSec: number;
}

/** Pss from /proc/<pid>/smaps_rollup, in KiB (undefined when the process is gone or unreadable). */
export function pssKib(pid: number, proc = "/proc"): number | undefined {
  try {
    const m = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`${proc}/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function podRows(runDir = VM_RUN_DIR, now = Date.now(), proc = "/proc"): { rows: PodRow[]; problems: string[] } {
  const rows: PodRow[] = [];
  const problems: string[] = [];
  for (const e of readPodStates(runDir)) {
    if (!e.state) {
      problems.push(`${e.dir}: ${e.error}`);
      continue;
    }
    const s = e.state;
    const pids = s.vmmPid === s.shimPid ? [s.vmmPid] : [s.vmmPid, s.shimPid];
    const pss = pids.map((p) => pssKib(p, proc));
    rows.push({
      ...s,
      alive: existsSync(`${proc}/${s.shimPid}`),
      ...(pss.every((p) => p !== undefined) ? { hostPssKib: pss.reduce((a, b) => a + b, 0) } : {}),
      uptimeSec: Math.max(0, Math.round((now - Date.parse(s.startedAt)) / 1000)),
    });
  }
  return { rows, problems };
}

export function formatUptime(sec: number): string {
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${String(sec % 60).padStart(2, "0")}s`;
  if (sec < 86400) return `${Math.floor(sec / 3600)}h${String(Math.floor((sec % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(sec / 86400)}d${String(Math.floor((sec % 86400) / 3600)).padStart(2, "0")}h`;
}

const short = (id: string) => id.slice(0, 12);

export function formatRows(rows: PodRow[]): string {
  const head = ["POD", "NAMESPACE", "VMM PID", "BACKEND", "VCPUS", "GUEST MEM", "HOST PSS", "UPTIME", "CONTAINERS"];
  const table = rows.map((r) => [
    short(r.id),
    r.namespace,
    r.alive ? String(r.vmmPid) : `${r.vmmPid} (shim gone)`,
    r.accel ? `${r.backend}/${r.accel}` : r.backend,
    String(r.vcpus),
    `${r.memoryMib} MiB`,
    r.hostPssKib === undefined ? "-" : `${Math.round(r.hostPssKib / 1024)} MiB`,
    formatUptime(r.uptimeSec),
    r.containers.length ? `${r.containers.length}: ${r.containers.map(short).join(",")}` : "0",
  ]);
  return formatTable(head, table);
}

export const psCommand: Command = {
  path: ["ps"],
  summary: "list the pod VMs on this host: VMM pid, backend, memory, uptime, containers",
  usage: `cove ps [--json] [--run-dir DIR]

Lists the pods whose shims run on this host, from each pod VM's run state (${VM_RUN_DIR}/<vm>/pod.json,
written by the pod's shim): the pod id and containerd namespace, the VMM's pid (the shim itself on
the embedded backend, QEMU on the qemu backend), the backend and accelerator, vCPUs, guest memory,
the host memory the VMM and shim take (PSS), uptime and the pod's containers. Needs root.

  --json          one JSON object per pod (full ids), as an array
  --run-dir DIR   where the pod VMs' work dirs are (default ${VM_RUN_DIR})`,
  async run(args) {
    let v: { json?: boolean; "run-dir"?: string };
    try {
      v = parseArgs({ args, options: { json: { type: "boolean" }, "run-dir": { type: "string" } } }).values;
    } catch (e) {
      throw new UsageError(errorMessage(e));
    }
    const { rows, problems } = podRows(v["run-dir"] ?? VM_RUN_DIR);
    process.stdout.write(v.json ? `${JSON.stringify(rows, null, 2)}\n` : formatRows(rows));
    for (const p of problems) process.stderr.write(`cove ps: ${p}\n`);
    return 0;
  },
};
