// Typed views of the services and messages under proto/. The types are generated from the .proto
// files by scripts/gen-proto.mjs (protobufjs-cli) into src/proto/generated/, which is built, not
// committed: import them with `import type` only (at run time the codec uses the reflected root).
// A message's class type (e.g. `cove.agent.v1.CreateContainerRequest`) is the decoded shape, every
// field present; its `$Properties` (every field optional) is the shape to send.
import type { CallContext } from "../ttrpc/types.ts";
import type { $Messages, $Services } from "./generated/protos.d.ts";

export type { $Messages, $Services, containerd, cove, google, io } from "./generated/protos.d.ts";

/** A message's full name, e.g. "containerd.events.TaskExit". */
export type MessageName = keyof $Messages;
/** Message N as sent (every field optional). */
export type MessageInit<N extends MessageName> = $Messages[N]["init"];

export type ServiceName = keyof $Services;
export type MethodName<S extends ServiceName> = keyof $Services[S] & string;

type MethodOf<S extends ServiceName, M extends MethodName<S>> = $Services[S][M] & {
  request: unknown;
  requestInit: unknown;
  response: unknown;
  responseInit: unknown;
};

/** What a client sends to method M of S. */
export type RequestInit<S extends ServiceName, M extends MethodName<S>> = MethodOf<S, M>["requestInit"];
/** What a server's handler for M gets: the request decoded, every field present. */
export type Request<S extends ServiceName, M extends MethodName<S>> = MethodOf<S, M>["request"];
/** What a server's handler for M returns. */
export type ResponseInit<S extends ServiceName, M extends MethodName<S>> = MethodOf<S, M>["responseInit"];
/** What a client gets back from M: the response decoded, every field present. */
export type Response<S extends ServiceName, M extends MethodName<S>> = MethodOf<S, M>["response"];

/** A server's implementation of service S: one handler per method of the .proto, typed by it. */
export type ServiceHandlers<S extends ServiceName> = {
  [M in MethodName<S>]: (req: Request<S, M>, ctx: CallContext) => Promise<ResponseInit<S, M>>;
};
