// PID-1 duties: mounts, hostname, environment, orphan reaping, fatal-error handling. Everything the
// agent does later (ttrpc server, containers) runs on top of what this sets up.
import { readFileSync } from "node:fs";
import { hostname as osHostname } from "node:os";
import { sethostname } from "../../../src/native/mount.ts";
import type { Logger } from "../log.ts";
import { parseCmdline } from "./cmdline.ts";
import { currentMounts, mountEssentials } from "./mounts.ts";
import { installFatalHandlers, setGuestInit } from "./power.ts";
import { Reaper } from "./reaper.ts";

export interface Pid1 {
  /** Kernel command line parameters (/proc/cmdline). */
  cmdline: Map<string, string>;
  reaper: Reaper;
}

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** `guest: false`: an agent on a host (tests) — no mounts, no hostname, even as PID 1 of a pid namespace. */
export function startPid1(log: Logger, opts: { guest?: boolean } = {}): Pid1 {
  const isInit = process.pid === 1 && opts.guest !== false;
  setGuestInit(isInit);
  installFatalHandlers(log);
  if (isInit) {
    mountEssentials();
    // The kernel gives init only HOME and TERM.
    process.env.PATH ||= PATH;
    process.env.HOME ||= "/root";
  } else {
    log.warn({ pid: process.pid }, "not the guest's init: skipping mounts and hostname");
  }
  const cmdline = parseCmdline(readFileSync("/proc/cmdline", "utf8"));
  if (isInit) {
    let name = cmdline.get("cove.hostname");
    if (!name) {
      try {
        name = readFileSync("/etc/hostname", "utf8").trim();
      } catch {
        name = "cove-guest";
      }
    }
    sethostname(name);
  }
  log.info({ mounts: [...currentMounts()], hostname: osHostname() }, "pid1 up");
  const reaper = new Reaper();
  reaper.on("exit", (e) => log.debug(e, "reaped orphan"));
  reaper.start();
  // PID 1 must never run out of work: this timer keeps the event loop alive.
  setInterval(() => {}, 1 << 30);
  return { cmdline, reaper };
}
