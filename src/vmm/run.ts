// A developer and test entry point: boots a kernel (and optionally a root disk) in the embedded
// VMM, copies the guest console to stdout, and exits when the guest stops (or after --timeout).
// It is what the nested-host tests and the VMM benchmark run.
//   node --import tsx src/vmm/run.ts [--kernel F] [--disk F[:ro]]... [--mem MiB] [--vcpus N]
//        [--cmdline "…"] [--timeout S] [--until REGEX]
// Exit code: 0 if the guest stopped by itself (or --until matched), 1 on error, 2 on timeout.
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { guestArtifacts } from "../guest/paths.ts";
import { BlkDevice } from "../virtio/blk/device.ts";
import { MiB } from "./layout.ts";
import { Machine } from "./machine.ts";

export interface RunResult {
  reason: string;
  /** ms from Machine.create to the --until match (or the stop). */
  untilMs?: number;
  exits: Record<string, number>;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      kernel: { type: "string" },
      disk: { type: "string", multiple: true },
      mem: { type: "string", default: "512" },
      vcpus: { type: "string", default: "1" },
      cmdline: { type: "string", default: "" },
      timeout: { type: "string", default: "120" },
      until: { type: "string" },
      "log-level": { type: "string", default: "info" },
    },
  });
  const log = pino({ level: values["log-level"] }, pino.destination(2));
  const t0 = performance.now();
  const machine = Machine.create({
    kernel: values.kernel ?? guestArtifacts().kernel,
    cmdline: values.cmdline,
    memoryBytes: Number(values.mem) * MiB,
    vcpus: Number(values.vcpus),
    log,
    onConsoleLine: (line) => {
      process.stdout.write(`${line}\n`);
      if (until?.test(line)) finish("until", 0);
    },
  });
  const until = values.until ? new RegExp(values.until) : undefined;
  let done: (code: number) => void = () => {};
  const finished = new Promise<number>((res) => {
    done = res;
  });
  let over = false;
  const finish = (why: string, code: number) => {
    if (over) return;
    over = true;
    const exits: Record<string, number> = {};
    for (const l of machine.loops) for (const [k, n] of l.exits) exits[k] = (exits[k] ?? 0) + n;
    log.info({ why, ms: Math.round(performance.now() - t0), exits }, "embedded VMM run finished");
    process.stderr.write(`${JSON.stringify({ result: why, ms: performance.now() - t0, exits })}\n`);
    done(code);
  };
  try {
    for (const spec of values.disk ?? []) {
      const [path, mode] = spec.split(":");
      const blk = await BlkDevice.create({ path, readOnly: mode === "ro", logger: log });
      machine.addVirtioDevice(blk);
    }
    machine.boot();
  } catch (err) {
    log.error({ err }, "boot failed");
    machine.close();
    return 1;
  }
  const timer = setTimeout(() => finish("timeout", 2), Number(values.timeout) * 1000);
  machine.stopped.then((r) => finish(r.kind === "error" ? `error: ${r.message}` : r.kind, r.kind === "error" ? 1 : 0));
  const code = await finished;
  clearTimeout(timer);
  machine.close();
  return code;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      console.error(err.stack ?? err.message);
      process.exit(1);
    },
  );
}
