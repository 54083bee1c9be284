// A developer and test entry point: boots a kernel (and optionally a root disk) in the embedded
// VMM, copies the guest console to stdout, and exits when the guest stops (or after --timeout).
// It is what the nested-host tests and the VMM benchmark run.
//   node --import tsx tools/vmm-run.ts [--kernel F] [--disk F[:ro]]... [--mem MiB] [--vcpus N]
//        [--cmdline "…"] [--timeout S] [--until REGEX]
// Exit code: 0 if the guest stopped by itself (or --until matched), 1 on error, 2 on timeout.
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { guestArtifacts } from "../src/guest/paths.ts";
import { BlkDevice } from "../src/virtio/blk/device.ts";
import { pssReport, withinRanges } from "../src/vmm/accounting.ts";
import { MiB } from "../src/vmm/layout.ts";
import { Machine } from "../src/vmm/machine.ts";
import { kvmStats } from "../src/vmm/stats.ts";

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
      /** Print a `{"report":…}` line at the end: timings, PSS without guest RAM, KVM exit counters. */
      report: { type: "boolean", default: false },
    },
  });
  const disks: BlkDevice[] = [];
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
      if (until?.test(line)) void finish("until", 0);
    },
  });
  const until = values.until ? new RegExp(values.until) : undefined;
  let done: (code: number) => void = () => {};
  const finished = new Promise<number>((res) => {
    done = res;
  });
  let over = false;
  const finish = async (why: string, code: number) => {
    if (over) return;
    over = true;
    // Park the vCPUs: registers and KVM stats can only be read outside KVM_RUN.
    await Promise.race([Promise.all(machine.loops.map((l) => l.pause())), new Promise((r) => setTimeout(r, 5000))]);
    if (why === "timeout") {
      for (const l of machine.loops) {
        try {
          const r = l.vcpu.getRegs();
          const sr = l.vcpu.getSregs();
          log.warn(
            {
              vcpu: l.vcpu.id,
              rip: `0x${r.rip.toString(16)}`,
              rsp: `0x${r.rsp.toString(16)}`,
              cr0: `0x${sr.cr0.toString(16)}`,
              cr3: `0x${sr.cr3.toString(16)}`,
              efer: `0x${sr.efer.toString(16)}`,
            },
            "vCPU state at timeout",
          );
        } catch (err) {
          log.warn({ vcpu: l.vcpu.id, err: (err as Error).message }, "cannot read vCPU state");
        }
      }
    }
    const exits: Record<string, number> = {};
    for (const l of machine.loops) for (const [k, n] of l.exits) exits[k] = (exits[k] ?? 0) + n;
    log.info({ why, ms: Math.round(performance.now() - t0), exits }, "embedded VMM run finished");
    process.stderr.write(`${JSON.stringify({ result: why, ms: performance.now() - t0, exits })}\n`);
    if (values.report) process.stderr.write(`${JSON.stringify({ report: report(why) })}\n`);
    done(code);
  };
  try {
    for (const spec of values.disk ?? []) {
      const [path, mode] = spec.split(":");
      const blk = await BlkDevice.create({ path, readOnly: mode === "ro", logger: log });
      machine.addVirtioDevice(blk);
      disks.push(blk);
    }
    machine.boot();
  } catch (err) {
    log.error({ err }, "boot failed");
    machine.close();
    return 1;
  }
  const report = (why: string) => {
    const kvm: Record<string, number> = {};
    for (const l of machine.loops) {
      try {
        for (const [k, v] of kvmStats(l.vcpu.fd)) kvm[k] = (kvm[k] ?? 0) + Number(v);
      } catch {
        // KVM without binary stats (< 5.14): counters stay empty
      }
    }
    return {
      why,
      ms: performance.now() - t0,
      firstKvmExitMs: machine.firstExitMs,
      pss: pssReport("self", withinRanges(machine.ramHostRanges)),
      userspaceExits: Object.fromEntries(machine.loops.flatMap((l) => [...l.exits])),
      kvm,
      blk: disks.map((d) => ({ ...d.metrics })),
      transports: machine.transports.map((t) => ({ device: t.device.name, ...t.stats, msi: t.msiActive })),
    };
  };
  const timer = setTimeout(() => void finish("timeout", 2), Number(values.timeout) * 1000);
  machine.stopped.then(
    (r) => void finish(r.kind === "error" ? `error: ${r.message}` : r.kind, r.kind === "error" ? 1 : 0),
  );
  const code = await finished;
  clearTimeout(timer);
  machine.close();
  return code;
}

// Works from source (ESM under tsx) and as an esbuild CJS bundle (the VMM benchmark runs that).
const self = typeof __filename !== "undefined" ? __filename : fileURLToPath(import.meta.url);
if (process.argv[1] && resolve(process.argv[1]) === self) {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      console.error(err.stack ?? err.message);
      process.exit(1);
    },
  );
}
