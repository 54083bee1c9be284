// ttrpc client: odd, strictly increasing stream ids; any number of calls in flight, matched to
// responses by id. Every pending call settles exactly once: response, local timeout, abort, or close.
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { errorMessage } from "../common/errors.ts";
import { Channel } from "./channel.ts";
import { methodCodec } from "./codec.ts";
import { Code, TtrpcError } from "./codes.ts";
import { decodeResponse, encodeRequestFrame } from "./envelope.ts";
import { DEFAULT_MAX_MESSAGE_SIZE, type FrameHeader, MessageType } from "./frame.ts";
import type { CallOptions } from "./types.ts";

export interface ClientOptions {
  /** Largest frame payload sent or accepted; default 4 MiB (ttrpc's limit). */
  maxMessageSize?: number;
}

/** A call waiting for its response. Timer and abort listener exist only when asked for. */
class Pending {
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  constructor(
    readonly resolve: (payload: Uint8Array) => void,
    readonly reject: (err: TtrpcError) => void,
  ) {}

  cleanup(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.onAbort) this.signal!.removeEventListener("abort", this.onAbort);
  }
}

const MAX_STREAM_ID = 0xffffffff;

export class TtrpcClient {
  readonly closed: Promise<void>;
  private readonly channel: Channel;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private markClosed!: () => void;

  constructor(stream: Duplex, opts: ClientOptions = {}) {
    this.closed = new Promise((resolve) => {
      this.markClosed = resolve;
    });
    this.channel = new Channel(
      stream,
      {
        frame: (h, p) => this.onFrame(h, p),
        oversize: (h) => this.onOversize(h),
        close: () => this.onClose(),
      },
      opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE,
    );
  }

  /** Calls currently waiting for a response (tests check this returns to zero). */
  get inFlight(): number {
    return this.pending.size;
  }

  callRaw(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    if (this.channel.closed) return Promise.reject(closedError());
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal));
    if (this.nextId > MAX_STREAM_ID) {
      // 2^31 calls on one connection: ids cannot increase any more, so the connection is spent.
      this.close();
      return Promise.reject(new TtrpcError(Code.UNAVAILABLE, "ttrpc: stream ids exhausted"));
    }
    const timeoutMs = opts.timeoutMs !== undefined && opts.timeoutMs > 0 ? opts.timeoutMs : 0;
    const frame = encodeRequestFrame(this.nextId, {
      service,
      method,
      payload,
      timeoutNano: Math.floor(timeoutMs * 1e6),
      metadata: flattenMetadata(opts.metadata),
    });
    if (!this.channel.fits(frame)) {
      return Promise.reject(
        new TtrpcError(
          Code.RESOURCE_EXHAUSTED,
          `ttrpc: message length ${frame.length - 10} exceeds maximum message size of ${this.channel.maxMessageSize}`,
        ),
      );
    }
    const id = this.nextId;
    this.nextId += 2;
    return new Promise<Uint8Array>((resolve, reject) => {
      const entry = new Pending(resolve, reject);
      this.pending.set(id, entry);
      if (timeoutMs > 0 && timeoutMs < 2 ** 31 - 1) {
        entry.timer = setTimeout(
          () => this.settle(id)?.reject(new TtrpcError(Code.DEADLINE_EXCEEDED, "ttrpc: context deadline exceeded")),
          timeoutMs,
        );
      }
      const signal = opts.signal;
      if (signal) {
        entry.signal = signal;
        entry.onAbort = () => this.settle(id)?.reject(abortError(signal));
        signal.addEventListener("abort", entry.onAbort, { once: true });
      }
      this.channel.send(frame);
    });
  }

  /** A typed call: `req`/result are plain objects of the method's protobuf types (see src/ttrpc/codec.ts). */
  async call<Res = Record<string, unknown>>(
    serviceFullName: string,
    method: string,
    req: object,
    opts?: CallOptions,
  ): Promise<Res> {
    const codec = methodCodec(serviceFullName, method);
    const res = await this.callRaw(serviceFullName, method, codec.request.encode(req), opts);
    try {
      return codec.response.decode(res) as Res;
    } catch (err) {
      throw new TtrpcError(Code.INTERNAL, `ttrpc: cannot decode ${method} response: ${errorMessage(err)}`);
    }
  }

  close(): void {
    this.channel.close();
  }

  /** Removes a pending call and releases its timer/listener; undefined if it already settled. */
  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    p.cleanup();
    return p;
  }

  private onFrame(h: FrameHeader, payload: Uint8Array): void {
    if (h.type !== MessageType.RESPONSE) return; // data frames (streams) and unknown types: ignored
    const p = this.settle(h.streamId);
    if (!p) return; // late answer to a call that timed out or was aborted
    let res: ReturnType<typeof decodeResponse>;
    try {
      res = decodeResponse(payload);
    } catch (err) {
      p.reject(new TtrpcError(Code.INTERNAL, `ttrpc: malformed response: ${errorMessage(err)}`));
      return;
    }
    if (res.status && res.status.code !== Code.OK) p.reject(new TtrpcError(res.status.code, res.status.message));
    else p.resolve(res.payload);
  }

  private onOversize(h: FrameHeader): void {
    if (h.type !== MessageType.RESPONSE) return;
    this.settle(h.streamId)?.reject(
      new TtrpcError(
        Code.RESOURCE_EXHAUSTED,
        `ttrpc: response length ${h.length} exceeds maximum message size of ${this.channel.maxMessageSize}`,
      ),
    );
  }

  private onClose(): void {
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(closedError());
    this.markClosed();
  }
}

function closedError(): TtrpcError {
  return new TtrpcError(Code.UNAVAILABLE, "ttrpc: closed");
}

function abortError(signal: AbortSignal): TtrpcError {
  const r: unknown = signal.reason;
  if (r instanceof TtrpcError) return r;
  return new TtrpcError(Code.CANCELLED, `ttrpc: call cancelled${r instanceof Error ? `: ${r.message}` : ""}`);
}

function flattenMetadata(md: CallOptions["metadata"]): Array<[string, string]> {
  if (!md) return [];
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(md)) {
    if (Array.isArray(v)) for (const x of v) out.push([k, x]);
    else out.push([k, v]);
  }
  return out;
}

/** Connects to a ttrpc server on a unix socket path (a leading unix:// is accepted, as containerd prints it). */
export function connectUnix(path: string, opts: { timeoutMs?: number } = {}): Promise<TtrpcClient> {
  const target = path.startsWith("unix://") ? path.slice("unix://".length) : path;
  return new Promise((resolve, reject) => {
    const socket = netConnect(target);
    let timer: NodeJS.Timeout | undefined;
    const fail = (err: Error) => {
      if (timer) clearTimeout(timer);
      socket.destroy();
      reject(new TtrpcError(Code.UNAVAILABLE, `ttrpc: connect ${target}: ${err.message}`));
    };
    if (opts.timeoutMs !== undefined && opts.timeoutMs > 0) {
      timer = setTimeout(() => fail(new Error(`timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    }
    socket.once("error", fail);
    socket.once("connect", () => {
      if (timer) clearTimeout(timer);
      socket.off("error", fail);
      resolve(new TtrpcClient(socket));
    });
  });
}
