// Publishes task events to containerd: ttrpc `containerd.services.events.ttrpc.v1.Events/Forward` on
// $TTRPC_ADDRESS, one event at a time in order, with bare type URLs ("containerd.events.TaskExit",
// the only form containerd 1.6 resolves), a non-zero timestamp, the namespace in ttrpc metadata, and
// up to 5 attempts with backoff, reconnecting after a failure (as containerd's Go shim publisher).
//
// The queue is bounded without ever losing a lifecycle event. TaskOOM is the one event the guest can
// raise at any rate (the agent's OOM poll answers whenever it likes), so it is coalesced: per
// container, one waits in the queue at a time, further ones merge into it, and one goes out at most
// every `coalesceIntervalMs`. Every other event (create, start, exit, delete, exec, pause, …) is
// queued in order, never merged and never dropped for space: each follows a request of containerd's
// or the one exit of a process it created, so containerd's own activity bounds their number.
import type { Logger } from "pino";
import { messageType } from "../proto/root.ts";
import type { MessageInit } from "../proto/services.ts";
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

/** Events that only say "this happened (again) in container X": merged per container. */
export const COALESCED: ReadonlySet<EventType> = new Set<EventType>(["containerd.events.TaskOOM"]);
/** At most one coalesced event per container and type goes to containerd in this interval. */
export const COALESCE_INTERVAL_MS = 1000;
/** Containers with a coalesced event held at once; beyond, new ones are dropped (and counted). */
export const MAX_COALESCED_KEYS = 1024;

export interface EventSink {
  publish<T extends EventType>(type: T, event: MessageInit<T>): void;
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
  /** See COALESCE_INTERVAL_MS (tests shorten it). */
  coalesceIntervalMs?: number;
  connect?: (path: string) => Promise<TtrpcClient>;
}

export const EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events";

interface Queued {
  type: EventType;
  event: Record<string, unknown>;
  at: Date;
  /** Set for a coalesced event: its type and container. */
  key?: string;
}

/** A coalesced event that is queued (no timer) or waits for its container's interval (timer). */
interface Held {
  q: Queued;
  timer?: NodeJS.Timeout;
}

function coalesceKey(type: EventType, containerId: unknown): string {
  return `${type} ${String(containerId)}`;
}

export class EventPublisher implements EventSink {
  private readonly queue: Queued[] = [];
  /** Coalesced events not yet sent, by key. */
  private readonly held = new Map<string, Held>();
  /** When each key last went out; insertion order is time order (re-inserted on every send). */
  private readonly lastSent = new Map<string, number>();
  private readonly coalesceIntervalMs: number;
  private client?: TtrpcClient;
  private running?: Promise<void>;
  private closed = false;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;
  private readonly connect: (path: string) => Promise<TtrpcClient>;
  /** Counts for tests and logs. */
  readonly stats = { sent: 0, dropped: 0, retries: 0, coalesced: 0, maxQueued: 0 };

  constructor(private readonly opts: PublisherOptions) {
    this.attempts = opts.attempts ?? 5;
    this.backoffMs = opts.backoffMs ?? 100;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.coalesceIntervalMs = opts.coalesceIntervalMs ?? COALESCE_INTERVAL_MS;
    this.connect = opts.connect ?? ((p) => connectUnix(p, { timeoutMs: this.timeoutMs }));
  }

  /** Events waiting to be sent (the coalesced ones waiting for their interval not included). */
  get queued(): number {
    return this.queue.length;
  }

  publish<T extends EventType>(type: T, event: MessageInit<T>): void {
    if (this.closed) return;
    // The timestamp is taken now, so events keep the order and time of what happened.
    // Typed by the .proto on the way in; the queue and the encoder take any of them.
    const q: Queued = { type, event: event as unknown as Record<string, unknown>, at: new Date() };
    if (COALESCED.has(type)) {
      this.hold(q, coalesceKey(type, event.container_id));
      return;
    }
    // What was held for this container happened before this event (an OOM kill before the exit it
    // caused): it goes first, whatever its interval says.
    if (event.container_id !== undefined) {
      for (const t of COALESCED) this.release(coalesceKey(t, event.container_id));
    }
    this.enqueue(q);
  }

  private hold(q: Queued, key: string): void {
    if (this.held.has(key)) {
      this.stats.coalesced++;
      return;
    }
    if (this.held.size >= MAX_COALESCED_KEYS) {
      this.stats.dropped++;
      return;
    }
    q.key = key;
    const wait = (this.lastSent.get(key) ?? Number.NEGATIVE_INFINITY) + this.coalesceIntervalMs - Date.now();
    const h: Held = { q };
    this.held.set(key, h);
    if (wait > 0) h.timer = setTimeout(() => this.release(key), wait);
    else this.enqueue(q);
  }

  /** Queues a held event now if it waits for its interval. */
  private release(key: string): void {
    const h = this.held.get(key);
    if (!h?.timer) return;
    clearTimeout(h.timer);
    h.timer = undefined;
    this.enqueue(h.q);
  }

  private enqueue(q: Queued): void {
    this.queue.push(q);
    if (this.queue.length > this.stats.maxQueued) this.stats.maxQueued = this.queue.length;
    if (!this.running) this.running = this.drain().finally(() => (this.running = undefined));
  }

  /** A coalesced event left the queue (sent or dropped): the next one for its key starts anew. */
  private done(key: string): void {
    this.held.delete(key);
    const now = Date.now();
    this.lastSent.delete(key);
    this.lastSent.set(key, now);
    for (const [k, at] of this.lastSent) {
      if (at + this.coalesceIntervalMs > now && this.lastSent.size <= MAX_COALESCED_KEYS) break;
      this.lastSent.delete(k);
    }
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
    for (const h of this.held.values()) clearTimeout(h.timer);
    this.held.clear();
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
      if (q.key !== undefined) this.done(q.key);
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
