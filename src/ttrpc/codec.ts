// Request/response message codecs for typed calls, from the services in src/proto/root.ts.
import type protobuf from "protobufjs";
import { root } from "../proto/root.ts";
import { Code, TtrpcError } from "./codes.ts";

/** The toObject options of the contract (src/ttrpc/index.ts). */
export const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: Number, bytes: Buffer, defaults: true };

export interface MessageCodec {
  encode(obj: object): Uint8Array;
  decode(bytes: Uint8Array): Record<string, unknown>;
}

export interface MethodCodec {
  request: MessageCodec;
  response: MessageCodec;
}

const typeCodecs = new WeakMap<protobuf.Type, MessageCodec>();

export function messageCodec(type: protobuf.Type): MessageCodec {
  let c = typeCodecs.get(type);
  if (!c) {
    c = {
      encode: (obj) => type.encode(type.fromObject(obj as Record<string, unknown>)).finish(),
      decode: (bytes) => type.toObject(type.decode(bytes), TO_OBJECT),
    };
    typeCodecs.set(type, c);
  }
  return c;
}

/** The service by full name from the project's proto root; a clear error when it is not there. */
export function lookupService(serviceFullName: string): protobuf.Service {
  try {
    return root().lookupService(serviceFullName);
  } catch {
    throw new TtrpcError(Code.UNIMPLEMENTED, `ttrpc: service ${serviceFullName} is not defined under proto/`);
  }
}

const methodCodecs = new Map<string, MethodCodec>();

export function methodCodec(serviceFullName: string, method: string): MethodCodec {
  const key = `${serviceFullName}/${method}`;
  let c = methodCodecs.get(key);
  if (!c) {
    const m = lookupService(serviceFullName).methods[method];
    if (!m) throw new TtrpcError(Code.UNIMPLEMENTED, `ttrpc: ${serviceFullName} has no method ${method}`);
    m.resolve();
    if (!m.resolvedRequestType || !m.resolvedResponseType)
      throw new TtrpcError(Code.INTERNAL, `ttrpc: types of ${key} do not resolve`);
    c = { request: messageCodec(m.resolvedRequestType), response: messageCodec(m.resolvedResponseType) };
    methodCodecs.set(key, c);
  }
  return c;
}
