// The serving shim daemon: what `start` spawned (listening socket on fd 3), or run by hand with
// -socket. Sets itself up as containerd's Go shims do (child subreaper, logs to the bundle's `log`
// FIFO, only same-uid/gid peers, SIGTERM/SIGINT shut down) and serves the Task service.
import { fstatSync, unlinkSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import { createLogger, type DropCountingDestination, openLogFifo } from "../common/logger.ts";
import { loadConfig } from "../config/config.ts";
import { registerBuiltinBackends } from "../hypervisor/builtin.ts";
import { peerCred } from "../native/peercred.ts";
import { setChildSubreaper } from "../native/process.ts";
import { SandboxRuntime } from "../sandbox/index.ts";
import { TtrpcServer } from "../ttrpc/index.ts";
import { addressPath } from "./address.ts";
import { EventPublisher } from "./events.ts";
import type { ShimFlags } from "./flags.ts";
import type { TaskRuntime } from "./runtime.ts";
import { TASK_SERVICE, TASK_SERVICE_V3, TaskService } from "./service.ts";

/** fd 3 is the listening socket `start` passed down. */
const LISTEN_FD = 3;

function inheritedSocket(): boolean {
  try {
    return fstatSync(LISTEN_FD).isSocket();
  } catch {
    return false;
  }
}

/** Accept only peers with our uid and gid (SO_PEERCRED), as containerd's ttrpc servers do. */
export function peerAllowed(socket: net.Socket, logger: Logger): boolean {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    logger.warn("connection without a file descriptor: refused");
    return false;
  }
  const uid = process.geteuid?.() ?? 0;
  const gid = process.getegid?.() ?? 0;
  const cred = peerCred(fd);
  if (cred.uid === uid && cred.gid === gid) return true;
  logger.warn({ peer: cred, uid, gid }, "connection from a different uid/gid refused");
  return false;
}

export interface Daemon {
  service: TaskService;
  ttrpc: TtrpcServer;
  server: net.Server;
  stop(reason: string): Promise<void>;
}

export interface DaemonOptions {
  flags: ShimFlags;
  logger: Logger;
  runtime: TaskRuntime;
  ttrpcAddress: string | undefined;
  /** Called after everything is closed (the real daemon exits the process here). */
  onStopped?: () => void;
  checkPeer?: boolean;
}

/** Builds the daemon around an already listening net.Server. */
export function createDaemon(server: net.Server, o: DaemonOptions): Daemon {
  const { flags, logger, runtime } = o;
  const namespace = flags.namespace || process.env.NAMESPACE || "default";
  const events = new EventPublisher({ address: o.ttrpcAddress, namespace, logger });
  const ttrpc = new TtrpcServer({ logger });
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ reason }, "shim shutting down");
      // Unlink while still listening: until then nobody else can have bound this path, so the file
      // is ours; a `start` racing with this shutdown then binds a fresh socket instead of us
      // removing its socket later.
      if (flags.socket) {
        try {
          unlinkSync(addressPath(flags.socket));
        } catch {
          // already gone
        }
      }
      await ttrpc.close();
      try {
        await runtime.shutdown();
      } catch (e) {
        logger.error({ err: errorMessage(e) }, "sandbox shutdown failed");
      }
      await events.flush(2000);
      events.close();
      logger.info("shim stopped");
      o.onStopped?.();
    })();
    return stopping;
  };
  const service = new TaskService({ runtime, events, logger, onShutdown: () => void stop("Shutdown") });
  // containerd 2.x talks Task API v3 to a shim that answered version 3 at start; same messages.
  const handlers = service.handlers();
  for (const name of [TASK_SERVICE, TASK_SERVICE_V3] as const) ttrpc.registerService(name, handlers);
  server.on("connection", (socket: net.Socket) => {
    try {
      if (o.checkPeer !== false && !peerAllowed(socket, logger)) {
        socket.destroy();
        return;
      }
    } catch (e) {
      logger.error({ err: errorMessage(e) }, "peer credential check failed: connection refused");
      socket.destroy();
      return;
    }
    ttrpc.serve(socket);
  });
  return { service, ttrpc, server, stop };
}

function listen(server: net.Server, flags: ShimFlags, listenFd: number | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      resolve();
    });
    if (listenFd !== undefined) server.listen({ fd: listenFd });
    else if (inheritedSocket()) server.listen({ fd: LISTEN_FD });
    else if (flags.socket) server.listen(addressPath(flags.socket));
    else reject(new Error("no socket to serve on: run through `start`, or pass -socket"));
  });
}

/**
 * The daemon entry point: main.ts with no action (socket on fd 3 or -socket), or the `start`
 * process that became the daemon (listenFd: the socket it bound).
 */
export async function serve(flags: ShimFlags, listenFd?: number): Promise<void> {
  const bundle = flags.bundle || process.cwd();
  let dest: DropCountingDestination | undefined;
  try {
    dest = openLogFifo(join(bundle, "log"));
  } catch {
    // No log FIFO (run by hand): logs go nowhere rather than to fds containerd might be reading.
  }
  let level: string = flags.debug ? "debug" : "info";
  let configNote: string | undefined;
  try {
    if (!flags.debug) level = loadConfig({ configPath: flags.configPath || undefined }).log.level;
  } catch (e) {
    configNote = errorMessage(e); // reported again, to containerd, by Create
  }
  const logger = createLogger({
    level,
    destination: dest,
    base: { runtime: "io.containerd.cove.v2", shim: flags.id, namespace: flags.namespace },
  });
  if (configNote) logger.warn({ err: configNote }, "cove config could not be loaded");
  process.on("uncaughtException", (e) => {
    logger.fatal({ err: e.message, stack: e.stack }, "uncaught exception");
    process.exit(1);
  });
  try {
    setChildSubreaper();
  } catch (e) {
    logger.warn({ err: errorMessage(e) }, "cannot become child subreaper");
  }
  registerBuiltinBackends();
  const runtime = new SandboxRuntime({
    logger,
    configPath: flags.configPath || undefined,
    containerd: flags.address
      ? { address: flags.address, namespace: flags.namespace || process.env.NAMESPACE || "default" }
      : undefined,
  });
  const server = net.createServer();
  const daemon = createDaemon(server, {
    flags,
    logger,
    runtime,
    ttrpcAddress: process.env.TTRPC_ADDRESS,
    onStopped: () => {
      dest?.close();
      process.exit(0);
    },
  });
  await listen(server, flags, listenFd);
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => void daemon.stop(sig));
  // Time since process start: what a served Connect waits for after `start` (benchmarked).
  logger.info({ socket: flags.socket, boot_ms: Math.round(performance.now()) }, "shim serving");
}
