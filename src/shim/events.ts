// Publishes task events to containerd: ttrpc `containerd.services.events.ttrpc.v1.Events/Forward` on
// $TTRPC_ADDRESS, one event at a time in order, with bare type URLs ("containerd.events.TaskExit",
// the only form containerd 1.6 resolves), a non-zero timestamp, the namespace in ttrpc metadata, and
// up to 5 attempts with backoff, reconnecting after a failure (as containerd's Go shim publisher).
import type { Logger } from "pino";
import { messageType } from "../proto/root.ts";
import { connectUnix, type TtrpcClient } from "../ttrpc/index.ts";

export const TOPICS = {
  "containerd.events.TaskCreate": "/tasks/create",
  "containerd.events.TaskStart": "/tasks/start",
  "containerd.events.TaskExit": "/tasks/exit",
  "containerd.events.TaskDelete": "/tasks/delete",
  "containerd.events.TaskOOM": "/tasks/oom",
  "containerd.events.TaskExecAdded": "/tasks/exec-added",
  "containerd.events.TaskExecStarted": "/tasks/exec-started",
  "containerd.events.TaskPaused": "/tasks/paused",
  "containerd.events.TaskResumed": "/tasks/resumed",
  "containerd.events.TaskCheckpointed": "/tasks/checkpointed",
} as const;

export type EventType = keyof typeof TOPICS;

export interface EventSink {
  publish(type: EventType, event: Record<string, unknown>): void;
}

export interface PublisherOptions {
  /** containerd's ttrpc socket ($TTRPC_ADDRESS); events are dropped (and logged) without one. */
  address: string | undefined;
  namespace: string;
  logger: Logger;
  attempts?: number;
  /** Delay before retry n (1-based) is backoffMs * n. */
  backoffMs?: number;
  timeoutMs?: number;
  connect?: (path: string) => Promise<TtrpcClient>;
}

export const EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events";

interface Queued {
  type: EventType;
  event: Record<string, unknown>;
  at: Date;
}

export class EventPublisher implements EventSink {
  private readonly queue: Queued[] = [];
  private client?: TtrpcClient;
  private running?: Promise<void>;
  private closed = false;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;
  private readonly connect: (path: string) => Promise<TtrpcClient>;
  /** Counts for tests and logs. */
  readonly stats = { sent: 0, dropped: 0, retries: 0 };

  constructor(private readonly opts: PublisherOptions) {
    this.attempts = opts.attempts ?? 5;
    this.backoffMs = opts.backoffMs ?? 100;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.connect = opts.connect ?? ((p) => connectUnix(p, { timeoutMs: this.timeoutMs }));
  }

  publish(type: EventType, event: Record<string, unknown>): void {
    if (this.closed) return;
    // The timestamp is taken now, so events keep the order and time of what happened.
    this.queue.push({ type, event, at: new Date() });
    if (!this.running) this.running = this.drain().finally(() => (this.running = undefined));
  }

  /** Waits until everything queued so far was sent or dropped (bounded by timeoutMs). */
  async flush(timeoutMs = 5000): Promise<void> {
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
    this.client?.close();
    this.client = undefined;
  }

  private encode(q: Queued): Record<string, unknown> {
    const T = messageType(q.type);
    const value = T.encode(T.fromObject(q.event)).finish();
    const ms = q.at.getTime();
    return {
      envelope: {
        timestamp: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
        namespace: this.opts.namespace,
        topic: TOPICS[q.type],
        event: { type_url: q.type, value: Buffer.from(value) },
      },
    };
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.closed) {
      const q = this.queue.shift()!;
      await this.send(q);
    }
  }

  private async send(q: Queued): Promise<void> {
    const log = this.opts.logger;
    if (!this.opts.address) {
      this.stats.dropped++;
      log.debug({ type: q.type }, "no TTRPC_ADDRESS: event not forwarded");
      return;
    }
    const req = this.encode(q);
    let lastErr: unknown;
    for (let attempt = 1; attempt <= this.attempts && !this.closed; attempt++) {
      try {
        if (!this.client) this.client = await this.connect(this.opts.address);
        await this.client.call(EVENTS_SERVICE, "Forward", req, {
          timeoutMs: this.timeoutMs,
          metadata: { "containerd-namespace-ttrpc": this.opts.namespace },
        });
        this.stats.sent++;
        log.debug({ topic: TOPICS[q.type] }, "event forwarded");
        return;
      } catch (e) {
        lastErr = e;
        // Reconnect next time: the connection may be what failed.
        this.client?.close();
        this.client = undefined;
        if (attempt < this.attempts) {
          this.stats.retries++;
          await new Promise((r) => setTimeout(r, this.backoffMs * attempt));
        }
      }
    }
    this.stats.dropped++;
    log.error({ topic: TOPICS[q.type], err: (lastErr as Error)?.message }, "event dropped after retries");
  }
}
