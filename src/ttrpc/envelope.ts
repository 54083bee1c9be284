// Hand-written codec for the ttrpc envelope (proto/ttrpc/request.proto: Request, Response, KeyValue,
// google.rpc.Status). It sits on the hot path of every call, so it encodes header + envelope +
// payload into a single buffer (one allocation, one write) and decodes payloads as views instead
// of copies. Everything read is bounds-checked: input comes from a peer. Its wire output is checked
// against protobufjs (the .proto definitions) in test/unit/ttrpc/envelope.test.ts.
import { HEADER_LENGTH, MessageType, writeHeader } from "./frame.ts";

export interface RequestEnvelope {
  service: string;
  method: string;
  payload: Uint8Array;
  /** Relative deadline in ns; 0 = none. */
  timeoutNano: number;
  metadata: Array<[key: string, value: string]>;
}

export interface StatusEnvelope {
  code: number;
  message: string;
}

export interface ResponseEnvelope {
  /** Absent (undefined) on success. */
  status: StatusEnvelope | undefined;
  payload: Uint8Array;
}

const EMPTY = new Uint8Array(0);

// --- encoding -------------------------------------------------------------------------------

function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(b: Uint8Array, o: number, v: number): number {
  while (v >= 128) {
    b[o++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  b[o++] = v;
  return o;
}

/** int32 on the wire: negative values are sign-extended to 10 bytes. */
function int32Size(v: number): number {
  return v < 0 ? 10 : varintSize(v);
}

function writeInt32(b: Uint8Array, o: number, v: number): number {
  if (v >= 0) return writeVarint(b, o, v);
  let x = BigInt.asUintN(64, BigInt(v));
  for (let i = 0; i < 9; i++) {
    b[o++] = Number(x & 0x7fn) | 0x80;
    x >>= 7n;
  }
  b[o++] = Number(x);
  return o;
}

function lenFieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

function writeBytesField(b: Buffer, o: number, tag: number, data: Uint8Array): number {
  b[o++] = tag;
  o = writeVarint(b, o, data.length);
  b.set(data, o);
  return o + data.length;
}

function writeStringField(b: Buffer, o: number, tag: number, s: string, byteLen: number): number {
  b[o++] = tag;
  o = writeVarint(b, o, byteLen);
  if (byteLen > 0) b.write(s, o, byteLen, "utf8");
  return o + byteLen;
}

/** A whole request frame (header included). Empty/zero fields are omitted, as proto3 does. */
export function encodeRequestFrame(streamId: number, req: RequestEnvelope): Buffer {
  const serviceLen = Buffer.byteLength(req.service);
  const methodLen = Buffer.byteLength(req.method);
  let size = 0;
  if (serviceLen) size += lenFieldSize(serviceLen);
  if (methodLen) size += lenFieldSize(methodLen);
  if (req.payload.length) size += lenFieldSize(req.payload.length);
  const timeout = req.timeoutNano > 0 ? Math.floor(req.timeoutNano) : 0;
  if (timeout) size += 1 + varintSize(timeout);
  const kvLens: number[] = [];
  for (const [k, v] of req.metadata) {
    const kl = Buffer.byteLength(k);
    const vl = Buffer.byteLength(v);
    const inner = (kl ? lenFieldSize(kl) : 0) + (vl ? lenFieldSize(vl) : 0);
    kvLens.push(kl, vl, inner);
    size += lenFieldSize(inner);
  }
  const b = Buffer.allocUnsafe(HEADER_LENGTH + size);
  writeHeader(b, size, streamId, MessageType.REQUEST, 0);
  let o = HEADER_LENGTH;
  if (serviceLen) o = writeStringField(b, o, 0x0a, req.service, serviceLen);
  if (methodLen) o = writeStringField(b, o, 0x12, req.method, methodLen);
  if (req.payload.length) o = writeBytesField(b, o, 0x1a, req.payload);
  if (timeout) {
    b[o++] = 0x20;
    o = writeVarint(b, o, timeout);
  }
  let i = 0;
  for (const [k, v] of req.metadata) {
    const kl = kvLens[i++]!;
    const vl = kvLens[i++]!;
    const inner = kvLens[i++]!;
    b[o++] = 0x2a;
    o = writeVarint(b, o, inner);
    if (kl) o = writeStringField(b, o, 0x0a, k, kl);
    if (vl) o = writeStringField(b, o, 0x12, v, vl);
  }
  return b;
}

/** A whole response frame (header included). `status` undefined = success (no status field). */
export function encodeResponseFrame(streamId: number, status: StatusEnvelope | undefined, payload: Uint8Array): Buffer {
  let size = 0;
  let statusInner = 0;
  let messageLen = 0;
  if (status) {
    messageLen = Buffer.byteLength(status.message);
    if (status.code !== 0) statusInner += 1 + int32Size(status.code);
    if (messageLen) statusInner += lenFieldSize(messageLen);
    size += lenFieldSize(statusInner);
  }
  if (payload.length) size += lenFieldSize(payload.length);
  const b = Buffer.allocUnsafe(HEADER_LENGTH + size);
  writeHeader(b, size, streamId, MessageType.RESPONSE, 0);
  let o = HEADER_LENGTH;
  if (status) {
    b[o++] = 0x0a;
    o = writeVarint(b, o, statusInner);
    if (status.code !== 0) {
      b[o++] = 0x08;
      o = writeInt32(b, o, status.code);
    }
    if (messageLen) o = writeStringField(b, o, 0x12, status.message, messageLen);
  }
  if (payload.length) writeBytesField(b, o, 0x12, payload);
  return b;
}

// --- decoding -------------------------------------------------------------------------------

export class MalformedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MalformedError";
  }
}

/** A bounds-checked cursor over one protobuf message (or a nested one, via `end`). */
class Cursor {
  /** Lower and upper 32 bits of the last varint (int32 fields read `low32 | 0`). */
  low32 = 0;
  high32 = 0;
  constructor(
    readonly b: Uint8Array,
    public pos: number,
    readonly end: number,
  ) {}

  /** Unsigned varint as a number (exact up to 2^53, which covers every length and field key). */
  varint(): number {
    let low = 0;
    let high = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new MalformedError("truncated varint");
      const byte = this.b[this.pos++]!;
      const bits = byte & 0x7f;
      if (i < 4) low |= bits << (7 * i);
      else if (i === 4) {
        low |= bits << 28;
        high |= bits >>> 4;
      } else high |= bits << (7 * i - 32);
      if ((byte & 0x80) === 0) {
        this.low32 = low >>> 0;
        this.high32 = high >>> 0;
        return this.high32 * 2 ** 32 + this.low32;
      }
    }
    throw new MalformedError("varint longer than 10 bytes");
  }

  /** Signed int64 as a number (exact within ±2^53; nothing read here needs more). */
  int64(): number {
    this.varint();
    return (this.high32 | 0) * 2 ** 32 + this.low32;
  }

  /** Bounds of a length-delimited field's content. */
  lengthDelimited(): [start: number, end: number] {
    const len = this.varint();
    if (len > this.end - this.pos) throw new MalformedError("length-delimited field runs past the end");
    const start = this.pos;
    this.pos += len;
    return [start, this.pos];
  }

  string(): string {
    const [s, e] = this.lengthDelimited();
    return s === e ? "" : utf8(this.b, s, e);
  }

  bytes(): Uint8Array {
    const [s, e] = this.lengthDelimited();
    return s === e ? EMPTY : this.b.subarray(s, e);
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.advance(4);
        return;
      default:
        throw new MalformedError(`unsupported wire type ${wireType}`);
    }
  }

  /** Next field key: [fieldNumber, wireType]. */
  key(): [field: number, wireType: number] {
    const k = this.varint();
    const field = Math.floor(k / 8);
    if (field === 0 || field > 0x1fffffff) throw new MalformedError(`invalid field number ${field}`);
    return [field, k % 8];
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw new MalformedError("fixed-width field runs past the end");
    this.pos += n;
  }
}

function utf8(b: Uint8Array, s: number, e: number): string {
  return Buffer.isBuffer(b)
    ? b.toString("utf8", s, e)
    : Buffer.from(b.buffer, b.byteOffset + s, e - s).toString("utf8");
}

function expectWire(field: number, got: number, want: number): void {
  if (got !== want) throw new MalformedError(`field ${field} has wire type ${got}, expected ${want}`);
}

/** Decodes a Request; throws MalformedError. The payload is a view into `b`. */
export function decodeRequest(b: Uint8Array): RequestEnvelope {
  const c = new Cursor(b, 0, b.length);
  const req: RequestEnvelope = { service: "", method: "", payload: EMPTY, timeoutNano: 0, metadata: [] };
  while (c.pos < c.end) {
    const [field, wire] = c.key();
    switch (field) {
      case 1:
        expectWire(field, wire, 2);
        req.service = c.string();
        break;
      case 2:
        expectWire(field, wire, 2);
        req.method = c.string();
        break;
      case 3:
        expectWire(field, wire, 2);
        req.payload = c.bytes();
        break;
      case 4:
        expectWire(field, wire, 0);
        req.timeoutNano = c.int64();
        break;
      case 5: {
        expectWire(field, wire, 2);
        const [s, e] = c.lengthDelimited();
        req.metadata.push(decodeKeyValue(new Cursor(b, s, e)));
        break;
      }
      default:
        c.skip(wire);
    }
  }
  return req;
}

function decodeKeyValue(c: Cursor): [string, string] {
  let key = "";
  let value = "";
  while (c.pos < c.end) {
    const [field, wire] = c.key();
    if (field === 1 && wire === 2) key = c.string();
    else if (field === 2 && wire === 2) value = c.string();
    else c.skip(wire);
  }
  return [key, value];
}

/** Decodes a Response; throws MalformedError. The payload is a view into `b`. */
export function decodeResponse(b: Uint8Array): ResponseEnvelope {
  const c = new Cursor(b, 0, b.length);
  const res: ResponseEnvelope = { status: undefined, payload: EMPTY };
  while (c.pos < c.end) {
    const [field, wire] = c.key();
    if (field === 1) {
      expectWire(field, wire, 2);
      const [s, e] = c.lengthDelimited();
      res.status = decodeStatus(new Cursor(b, s, e));
    } else if (field === 2) {
      expectWire(field, wire, 2);
      res.payload = c.bytes();
    } else c.skip(wire);
  }
  return res;
}

function decodeStatus(c: Cursor): StatusEnvelope {
  const st: StatusEnvelope = { code: 0, message: "" };
  while (c.pos < c.end) {
    const [field, wire] = c.key();
    if (field === 1 && wire === 0) {
      c.varint();
      st.code = c.low32 | 0;
    } else if (field === 2 && wire === 2) st.message = c.string();
    else c.skip(wire); // details (google.protobuf.Any) are not surfaced
  }
  return st;
}
