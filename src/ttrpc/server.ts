// ttrpc server: dispatches request frames to handlers, many in flight per connection, answered in
// completion order. Protocol violations get an error response on the offending stream id and never
// end the connection (what containerd/ttrpc does too).
import type { Server as NetServer } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import type { ServiceHandlers, ServiceName } from "../proto/services.ts";
import { Channel } from "./channel.ts";
import { lookupService, methodCodec } from "./codec.ts";
import { Code, TtrpcError, toStatus } from "./codes.ts";
import { decodeRequest, encodeResponseFrame, type RequestEnvelope, type StatusEnvelope } from "./envelope.ts";
import { DEFAULT_MAX_MESSAGE_SIZE, type FrameHeader, MessageType } from "./frame.ts";
import type { CallContext, Handler, RawHandler } from "./types.ts";

export interface ServerOptions {
  logger?: Logger;
  /** Largest frame payload accepted or sent; default 4 MiB (ttrpc's limit). */
  maxMessageSize?: number;
}

const EMPTY = new Uint8Array(0);

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, RawHandler>>();
  private readonly conns = new Set<ServerConnection>();
  private readonly listeners = new Set<NetServer>();
  private isClosed = false;
  readonly logger: Logger | undefined;
  readonly maxMessageSize: number;

  constructor(opts: ServerOptions = {}) {
    this.logger = opts.logger;
    this.maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
  }

  registerRaw(service: string, method: string, handler: RawHandler): void {
    let methods = this.services.get(service);
    if (!methods) {
      methods = new Map();
      this.services.set(service, methods);
    }
    methods.set(method, handler);
  }

  /**
   * Registers the methods of `impl` under a service defined in proto/ (request/response types come
   * from there). Methods of the service that `impl` lacks answer UNIMPLEMENTED; a key of `impl`
   * that is not a method of the service is a programming error and throws here.
   */
  registerService<S extends ServiceName>(serviceFullName: S, impl: Partial<ServiceHandlers<S>>): void {
    const service = lookupService(serviceFullName);
    for (const name of Object.keys(impl)) {
      if (!service.methods[name]) throw new Error(`ttrpc: ${serviceFullName} has no method ${name}`);
    }
    const handlers = impl as Record<string, Handler | undefined>;
    for (const name of Object.keys(service.methods)) {
      const handler = handlers[name];
      if (typeof handler !== "function") continue;
      const codec = methodCodec(serviceFullName, name);
      this.registerRaw(serviceFullName, name, async (payload, ctx) => {
        let req: Record<string, unknown>;
        try {
          req = codec.request.decode(payload);
        } catch (err) {
          throw new TtrpcError(Code.INVALID_ARGUMENT, `ttrpc: cannot decode ${name} request: ${errorMessage(err)}`);
        }
        const res = await handler.call(impl, req, ctx);
        return codec.response.encode(res ?? {});
      });
    }
  }

  /** The handler for service/method, or a TtrpcError(UNIMPLEMENTED) saying which part is unknown. */
  resolve(service: string, method: string): RawHandler {
    const methods = this.services.get(service);
    if (!methods) throw new TtrpcError(Code.UNIMPLEMENTED, `service ${service}`);
    const h = methods.get(method);
    if (!h) throw new TtrpcError(Code.UNIMPLEMENTED, `method ${service}/${method}`);
    return h;
  }

  /** Serves one connection until it closes. */
  serve(stream: Duplex): void {
    if (this.isClosed) {
      stream.destroy();
      return;
    }
    const conn = new ServerConnection(this, stream, () => this.conns.delete(conn));
    this.conns.add(conn);
  }

  /** Serves every connection a net.Server accepts (and closes it in close()). */
  listen(server: NetServer): void {
    this.listeners.add(server);
    server.on("connection", (socket) => this.serve(socket));
  }

  /** Number of open connections and of requests still running (tests check these return to zero). */
  stats(): { connections: number; inFlight: number } {
    let inFlight = 0;
    for (const c of this.conns) inFlight += c.inFlight;
    return { connections: this.conns.size, inFlight };
  }

  /** Stops accepting, closes every connection (running handlers see their signal aborted). */
  async close(): Promise<void> {
    this.isClosed = true;
    const waits: Promise<void>[] = [];
    for (const l of this.listeners) {
      waits.push(new Promise((resolve) => l.close(() => resolve())));
    }
    this.listeners.clear();
    for (const c of [...this.conns]) c.close();
    await Promise.all(waits);
  }
}

/**
 * One running request. Its AbortController is created only if the handler reads ctx.signal:
 * constructing one per call costs more than the rest of a round trip (measured, see
 * test/bench/ttrpc.bench.ts). A signal first read after the call was cancelled comes out aborted.
 */
class Call implements CallContext {
  deadline?: number;
  timer: NodeJS.Timeout | undefined;
  private controller: AbortController | undefined;
  private abortReason: unknown;

  constructor(
    readonly service: string,
    readonly method: string,
    readonly metadata: Record<string, string[]>,
  ) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
}

class ServerConnection {
  private readonly channel: Channel;
  private readonly calls = new Map<number, Call>();
  private lastStreamId = 0;

  constructor(
    private readonly server: TtrpcServer,
    stream: Duplex,
    private readonly onClosed: () => void,
  ) {
    this.channel = new Channel(
      stream,
      {
        frame: (h, p) => this.onFrame(h, p),
        oversize: (h) => this.onOversize(h),
        close: (err) => this.onClose(err),
      },
      server.maxMessageSize,
    );
  }

  get inFlight(): number {
    return this.calls.size;
  }

  close(): void {
    this.channel.close();
  }

  private onOversize(h: FrameHeader): void {
    if (h.type !== MessageType.REQUEST) return;
    this.server.logger?.warn({ streamId: h.streamId, length: h.length }, "ttrpc: oversized request discarded");
    this.sendStatus(h.streamId, {
      code: Code.RESOURCE_EXHAUSTED,
      message: `message length ${h.length} exceed maximum message size of ${this.channel.maxMessageSize}`,
    });
  }

  private onFrame(h: FrameHeader, payload: Uint8Array): void {
    // Responses, data frames (streaming, unsupported here) and unknown types are ignored, for
    // forward compatibility, as in containerd/ttrpc.
    if (h.type !== MessageType.REQUEST) return;
    const id = h.streamId;
    if (id % 2 !== 1) {
      this.sendStatus(id, {
        code: Code.INVALID_ARGUMENT,
        message: "StreamID must be odd for client initiated streams",
      });
      return;
    }
    if (id <= this.lastStreamId) {
      this.sendStatus(id, { code: Code.INVALID_ARGUMENT, message: "StreamID cannot be re-used and must increment" });
      return;
    }
    this.lastStreamId = id;
    let req: RequestEnvelope;
    try {
      req = decodeRequest(payload);
    } catch (err) {
      this.sendStatus(id, {
        code: Code.INVALID_ARGUMENT,
        message: `unmarshal request error: ${errorMessage(err)}`,
      });
      return;
    }
    let handler: RawHandler;
    try {
      handler = this.server.resolve(req.service, req.method);
    } catch (err) {
      this.sendStatus(id, toStatus(err));
      return;
    }
    this.start(id, req, handler);
  }

  private start(id: number, req: RequestEnvelope, handler: RawHandler): void {
    const call = new Call(req.service, req.method, toMetadata(req.metadata));
    if (req.timeoutNano !== 0) {
      const ms = Math.max(0, req.timeoutNano / 1e6);
      call.deadline = Date.now() + ms;
      // Clamp: setTimeout overflows past 2^31-1 ms (~24.8 days) and would fire at once.
      if (ms < 2 ** 31 - 1) call.timer = setTimeout(() => this.expire(id, call), ms);
    }
    this.calls.set(id, call);
    let p: Promise<Uint8Array>;
    try {
      p = handler(req.payload, call);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (res) => this.finish(id, call, undefined, res instanceof Uint8Array ? res : EMPTY),
      (err) => this.finish(id, call, toStatus(err), EMPTY),
    );
  }

  private expire(id: number, call: Call): void {
    if (this.calls.get(id) !== call) return;
    call.timer = undefined;
    this.calls.delete(id);
    call.abort(new TtrpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded"));
    this.sendStatus(id, { code: Code.DEADLINE_EXCEEDED, message: "context deadline exceeded" });
  }

  private finish(id: number, call: Call, status: StatusEnvelope | undefined, payload: Uint8Array): void {
    if (this.calls.get(id) !== call) return; // already answered (deadline) or connection gone
    this.calls.delete(id);
    if (call.timer) clearTimeout(call.timer);
    if (status) this.logStatus(id, status);
    let frame = encodeResponseFrame(id, status, payload);
    if (!this.channel.fits(frame)) {
      const message = `response length ${payload.length} exceeds maximum message size of ${this.channel.maxMessageSize}`;
      this.server.logger?.error({ streamId: id }, `ttrpc: ${message}`);
      frame = encodeResponseFrame(id, { code: Code.RESOURCE_EXHAUSTED, message }, EMPTY);
    }
    this.channel.send(frame);
  }

  private logStatus(id: number, status: StatusEnvelope): void {
    const log = this.server.logger;
    if (!log) return;
    const fields = { streamId: id, code: status.code, err: status.message };
    if (status.code === Code.UNKNOWN || status.code === Code.INTERNAL) log.warn(fields, "ttrpc: call failed");
    else log.debug(fields, "ttrpc: call failed");
  }

  private sendStatus(id: number, status: StatusEnvelope): void {
    this.server.logger?.debug({ streamId: id, code: status.code, err: status.message }, "ttrpc: request refused");
    this.channel.send(encodeResponseFrame(id, status, EMPTY));
  }

  private onClose(err: Error | undefined): void {
    if (err) this.server.logger?.debug({ err }, "ttrpc: connection closed with error");
    const reason = new TtrpcError(Code.UNAVAILABLE, "ttrpc: closed");
    for (const call of this.calls.values()) call.abort(reason);
    this.calls.clear();
    this.onClosed();
  }
}

function toMetadata(pairs: Array<[string, string]>): Record<string, string[]> {
  const md: Record<string, string[]> = Object.create(null);
  for (const [k, v] of pairs) {
    const list = md[k];
    if (list) list.push(v);
    else md[k] = [v];
  }
  return md;
}
