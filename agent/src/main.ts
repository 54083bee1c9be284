// cove-agent: PID 1 of the guest (started by /init, a `#!/usr/bin/node` shebang script).
// Kernel command line options it reads (see deploy/guest/README.md):
//   cove.shutdown_after_ready=1  end the VM right after the readiness line (tests, benchmarks)
//   cove.hostname=<name>         the guest's hostname (default: /etc/hostname)
//   cove.selftest=1              after the readiness line, run the image's OCI runtime once and log it
import { createLogger } from "./log.ts";
import { flag } from "./pid1/cmdline.ts";
import { startPid1 } from "./pid1/init.ts";
import { endVm } from "./pid1/power.ts";
import { announceReady } from "./ready.ts";
import { selfTest } from "./selftest.ts";

const log = createLogger();
const pid1 = startPid1(log);
const ready = announceReady();
log.info(ready, "ready");
if (flag(pid1.cmdline, "cove.selftest")) selfTest(log);
if (flag(pid1.cmdline, "cove.shutdown_after_ready")) endVm(log, "cove.shutdown_after_ready");
