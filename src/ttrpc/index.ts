// ttrpc for cove: containerd's small RPC protocol, used containerd↔shim and shim↔agent.
// Layers: frame.ts (bytes ↔ frames) → envelope.ts (Request/Response codec) → channel.ts (frames over
// a Duplex) → client.ts / server.ts. Typed calls use the services under proto/ (codec.ts).

export { type ClientOptions, connectUnix, TtrpcClient } from "./client.ts";
export { Code, type CodeValue, codeName, TtrpcError } from "./codes.ts";
export { DEFAULT_MAX_MESSAGE_SIZE } from "./frame.ts";
export { type ServerOptions, TtrpcServer } from "./server.ts";
export type { CallContext, CallOptions, Handler, RawHandler } from "./types.ts";
