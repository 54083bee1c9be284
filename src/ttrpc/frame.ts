// ttrpc framing: a 10-byte header (u32 BE payload length, u32 BE stream id, u8 type, u8 flags)
// followed by the payload. Pure byte handling, no streams: FrameDecoder takes chunks as they arrive
// and hands out whole frames; encodeFrame builds header+payload as one buffer (one write per frame).

export const HEADER_LENGTH = 10;
export const DEFAULT_MAX_MESSAGE_SIZE = 4 << 20;

export const MessageType = { REQUEST: 1, RESPONSE: 2, DATA: 3 } as const;
export const Flag = { REMOTE_CLOSED: 0x1, REMOTE_OPEN: 0x2, NO_DATA: 0x4 } as const;

export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

export interface FrameSink {
  /** A whole frame. `payload` may be a view into a chunk: copy it if kept beyond the call. */
  frame(header: FrameHeader, payload: Uint8Array): void;
  /** A frame whose length exceeds the limit; its payload bytes are skipped, never buffered. */
  oversize(header: FrameHeader): void;
}

/** Header + payload in one buffer. The caller checks the size limit. */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  writeHeader(out, payload.length, streamId, type, flags);
  out.set(payload, HEADER_LENGTH);
  return out;
}

/** Writes a header at the start of `out` (which must hold at least HEADER_LENGTH bytes). */
export function writeHeader(out: Uint8Array, length: number, streamId: number, type: number, flags: number): void {
  out[0] = length >>> 24;
  out[1] = length >>> 16;
  out[2] = length >>> 8;
  out[3] = length;
  out[4] = streamId >>> 24;
  out[5] = streamId >>> 16;
  out[6] = streamId >>> 8;
  out[7] = streamId;
  out[8] = type;
  out[9] = flags;
}

function readHeader(b: Uint8Array, o: number): FrameHeader {
  return {
    length: ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0,
    streamId: ((b[o + 4]! << 24) | (b[o + 5]! << 16) | (b[o + 6]! << 8) | b[o + 7]!) >>> 0,
    type: b[o + 8]!,
    flags: b[o + 9]!,
  };
}

/**
 * Incremental decoder. Frames contained whole in one chunk are handed out as views (no copy);
 * only a frame split across chunks is assembled into its own buffer, allocated once at its final size.
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(HEADER_LENGTH);
  private headerFill = 0;
  private current: FrameHeader | undefined; // header read, payload pending
  private body: Uint8Array | undefined; // payload being assembled across chunks
  private bodyFill = 0;
  private skip = 0; // bytes of an oversized payload still to drop

  constructor(
    private readonly sink: FrameSink,
    private readonly maxMessageSize: number = DEFAULT_MAX_MESSAGE_SIZE,
  ) {}

  /** True when no partial frame is buffered (a clean point to end the stream). */
  get idle(): boolean {
    return this.headerFill === 0 && this.current === undefined && this.skip === 0;
  }

  push(chunk: Uint8Array): void {
    let o = 0;
    const n = chunk.length;
    while (o < n) {
      if (this.skip > 0) {
        const k = Math.min(this.skip, n - o);
        this.skip -= k;
        o += k;
        continue;
      }
      if (this.current) {
        // Finishing a payload that started in an earlier chunk.
        const body = this.body!;
        const k = Math.min(body.length - this.bodyFill, n - o);
        body.set(chunk.subarray(o, o + k), this.bodyFill);
        this.bodyFill += k;
        o += k;
        if (this.bodyFill === body.length) this.emit(this.current, body);
        continue;
      }
      let h: FrameHeader;
      if (this.headerFill === 0 && n - o >= HEADER_LENGTH) {
        h = readHeader(chunk, o);
        o += HEADER_LENGTH;
      } else {
        const k = Math.min(HEADER_LENGTH - this.headerFill, n - o);
        this.header.set(chunk.subarray(o, o + k), this.headerFill);
        this.headerFill += k;
        o += k;
        if (this.headerFill < HEADER_LENGTH) return;
        this.headerFill = 0;
        h = readHeader(this.header, 0);
      }
      if (h.length > this.maxMessageSize) {
        this.skip = h.length;
        this.sink.oversize(h);
        continue;
      }
      if (n - o >= h.length) {
        const payload = chunk.subarray(o, o + h.length);
        o += h.length;
        this.sink.frame(h, payload);
        continue;
      }
      this.current = h;
      this.body = new Uint8Array(h.length);
      this.bodyFill = 0;
    }
  }

  private emit(h: FrameHeader, body: Uint8Array): void {
    this.current = undefined;
    this.body = undefined;
    this.bodyFill = 0;
    this.sink.frame(h, body);
  }
}
