// `cove.selftest=1` on the kernel command line: after the readiness line, check that the image's
// OCI runtime runs in this guest (its libraries are all there) and log one line with the result.
import { execFileSync } from "node:child_process";
import type { Logger } from "./log.ts";

export const RUNTIMES = ["crun", "runc"];

export function selfTest(log: Logger): boolean {
  for (const rt of RUNTIMES) {
    try {
      const out = execFileSync(rt, ["--version"], { encoding: "utf8", timeout: 30_000 });
      log.info({ runtime: rt, version: out.split("\n")[0] }, "selftest ok");
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
      log.error({ runtime: rt, err: e }, "selftest failed");
      return false;
    }
  }
  log.error({ tried: RUNTIMES }, "selftest failed: no OCI runtime in the image");
  return false;
}
