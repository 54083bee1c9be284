// `npm run soak [-- --cycles N] [--seed S] [--sample-every K]`: pods through CRI on a real containerd
// for N cycles on a fixed-seed schedule (tools/soak/churn.ts), sampling what a pod's life may leave
// behind every K cycles. Prints each series; exits 1 when a countable series is not back at its
// baseline once the pods are gone (containerd's PSS is printed as a trend, never judged).
// Needs root, the bundled shim (npm run build), the guest (npm run guest), QEMU and CNI plugins.
import { parseArgs } from "node:util";
import { type Fault, formatReport, runSoak } from "./churn.ts";

/** About 10 minutes on a 2-core TCG host (a cycle boots a pod VM: 9.2 s on average over 40 cycles). */
export const DEFAULT_CYCLES = 60;

const { values } = parseArgs({
  options: {
    cycles: { type: "string", default: String(DEFAULT_CYCLES) },
    seed: { type: "string", default: "20" },
    "sample-every": { type: "string", default: "10" },
    only: { type: "string" },
  },
});
const report = await runSoak({
  cycles: Number(values.cycles),
  seed: Number(values.seed),
  sampleEvery: Number(values["sample-every"]),
  ...(values.only ? { only: values.only as Fault } : {}),
  log: (l) => process.stdout.write(`${l}\n`),
});
process.stdout.write(`\n${formatReport(report)}\n`);
process.exit(report.failures.length ? 1 : 0);
