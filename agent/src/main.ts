// cove-agent: PID 1 of the guest (started by /init, a `#!/usr/bin/node` shebang script), serving
// the cove.agent.v1 API (proto/agent/v1/agent.proto) on vsock, or on a Unix socket on a host (tests).
// Kernel command line options it reads (see deploy/guest/README.md):
//   cove.shutdown_after_ready=1  end the VM right after the readiness line (tests, benchmarks)
//   cove.hostname=<name>         the guest's hostname (default: /etc/hostname)
//   cove.selftest=1              after the readiness line, run the image's OCI runtime once and log it
//   cove.log_level=<level>       the agent's log level (the shim's [log] level)
//   cove.debug_console=1         serve the debug console on vsock port 1027 ([debug] console)
// Arguments / environment (host use):
//   --listen vsock[:port] | unix:<path>   (COVE_AGENT_LISTEN; default vsock:1024, stdio on 1025)
//   --state-dir <dir>                     (COVE_AGENT_STATE_DIR; default /run/cove)
//   --runtime <crun|runc|path>            (COVE_AGENT_RUNTIME; default crun, else runc)
import { existsSync } from "node:fs";
import { setChildSubreaper } from "../../src/native/process.ts";
import { Agent } from "./agent.ts";
import { startDebugConsole } from "./debug/console.ts";
import { applyLogLevel, createLogger } from "./log.ts";
import { startLogPort } from "./log-port.ts";
import { flag } from "./pid1/cmdline.ts";
import { startPid1 } from "./pid1/init.ts";
import { installMemoryReport } from "./pid1/memory-report.ts";
import { endVm } from "./pid1/power.ts";
import { announceReady } from "./ready.ts";
import { selfTest } from "./selftest.ts";
import { parseListen, serve } from "./serve.ts";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function defaultRuntime(): string {
  const dirs = (process.env.PATH ?? "/usr/bin:/bin").split(":");
  for (const rt of ["crun", "runc"]) if (dirs.some((d) => existsSync(`${d}/${rt}`))) return rt;
  return "crun";
}

const log = createLogger();
const listen = parseListen(arg("--listen") ?? process.env.COVE_AGENT_LISTEN);
const guest = listen.kind === "vsock";
const pid1 = startPid1(log, { guest });
applyLogLevel(log, pid1.cmdline);
// Before the API: the shim connects to the log port once the agent answers.
startLogPort(log, listen, guest);
startDebugConsole(
  log,
  listen,
  flag(pid1.cmdline, "cove.debug_console") || process.env.COVE_AGENT_DEBUG_CONSOLE === "1",
);
if (process.pid !== 1) setChildSubreaper(); // orphaned container processes come back to the agent

const stateDir = arg("--state-dir") ?? process.env.COVE_AGENT_STATE_DIR ?? "/run/cove";
const agent = new Agent({
  stateDir,
  runtime: arg("--runtime") ?? process.env.COVE_AGENT_RUNTIME ?? defaultRuntime(),
  guest,
  log,
  reaper: pid1.reaper,
});
installMemoryReport(log, `${stateDir}/agent-memory.json`);

// The readiness line comes once the API listens. If listening fails (e.g. no vsock device in this
// VM), the agent says so, still announces itself (the boot is complete) and keeps retrying: PID 1
// must not end the VM over it.
function listenWithRetry(first: boolean): void {
  serve(agent, listen, log).then(
    () => {
      if (first) ready();
    },
    (err) => {
      log.error({ err }, "cannot listen; retrying in 2 s");
      if (first) ready();
      setTimeout(() => listenWithRetry(false), 2000);
    },
  );
}

function ready(): void {
  const r = announceReady();
  log.info(r, "ready");
  if (flag(pid1.cmdline, "cove.selftest")) selfTest(log);
  if (flag(pid1.cmdline, "cove.shutdown_after_ready")) endVm(log, "cove.shutdown_after_ready");
}

listenWithRetry(true);
