// The virtio layer's logger. Callers (sandbox, tests) may pass their own pino logger to devices;
// this default writes warnings and errors to stderr so a hostile guest is visible without setup.
import { type Logger, pino } from "pino";

export type { Logger };

export const defaultLogger: Logger = pino(
  { name: "virtio", level: process.env.COVE_VIRTIO_LOG ?? process.env.COVE_LOG_LEVEL ?? "warn" },
  pino.destination(2),
);
