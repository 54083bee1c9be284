// The shapes shared by client, server and their users.

export interface CallContext {
  service: string;
  method: string;
  /** From Request.metadata; a key sent several times keeps every value, in order. */
  metadata: Record<string, string[]>;
  /** Date.now()-based ms, from timeout_nano (absent when 0). */
  deadline?: number;
  /** Aborted at the deadline or when the connection closes. */
  signal: AbortSignal;
}

export type RawHandler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/**
 * Plain objects are protobufjs toObject(msg, { longs: Number, enums: Number, bytes: Buffer, defaults: true })
 * and encoded with Type.fromObject(); field names snake_case (keepCase). Timestamps {seconds, nanos}; Any {type_url, value}.
 */
export type Handler<Req = Record<string, unknown>, Res = Record<string, unknown>> = (
  req: Req,
  ctx: CallContext,
) => Promise<Res>;

export interface CallOptions {
  timeoutMs?: number;
  metadata?: Record<string, string | string[]>;
  signal?: AbortSignal;
}
