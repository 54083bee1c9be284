// The one place where cove's errors become gRPC codes: at the service edges (the shim's task service,
// the agent's service and its stdio port). A TtrpcError that reaches an edge is already a status
// (ttrpc's own, or an error the agent sent and the shim passes on) and keeps its code; a CoveError
// gets the code of its kind; anything else is UNKNOWN, as ttrpc has it.
import { Code, TtrpcError } from "../ttrpc/codes.ts";
import type { CallContext } from "../ttrpc/types.ts";
import { CoveError, errorMessage } from "./errors.ts";

const CODES: Readonly<Record<string, number>> = {
  COVE_ERR_NOT_FOUND: Code.NOT_FOUND,
  COVE_ERR_ALREADY_EXISTS: Code.ALREADY_EXISTS,
  COVE_ERR_INVALID_ARG: Code.INVALID_ARGUMENT,
  COVE_ERR_WRONG_STATE: Code.FAILED_PRECONDITION,
  COVE_ERR_NOT_SUPPORTED: Code.UNIMPLEMENTED,
  COVE_ERR_LIMIT: Code.RESOURCE_EXHAUSTED,
  COVE_ERR_UNAVAILABLE: Code.UNAVAILABLE,
  COVE_ERR_TIMEOUT: Code.DEADLINE_EXCEEDED,
  COVE_ERR_CANCELLED: Code.CANCELLED,
  COVE_ERR_INTERNAL: Code.INTERNAL,
};

export interface GrpcStatus {
  code: number;
  message: string;
}

/** The gRPC status a thrown value leaves a service with. */
export function grpcStatus(err: unknown): GrpcStatus {
  if (err instanceof TtrpcError) return { code: err.code, message: err.message };
  if (err instanceof CoveError)
    return { code: Object.hasOwn(CODES, err.code) ? CODES[err.code]! : Code.UNKNOWN, message: err.message };
  return { code: Code.UNKNOWN, message: errorMessage(err) };
}

/** A thrown value as ttrpc sends it (a TtrpcError stays the same object). */
export function toTtrpcError(err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  const s = grpcStatus(err);
  return new TtrpcError(s.code, s.message);
}

type AnyHandler = (req: never, ctx: CallContext) => Promise<unknown>;

/** A service's handlers whose errors leave with their gRPC code (grpcStatus); registered as they are. */
export function withGrpcStatus<H extends { [method: string]: AnyHandler }>(handlers: H): H {
  const out: Record<string, AnyHandler> = {};
  for (const [name, h] of Object.entries(handlers)) {
    out[name] = async (req, ctx) => {
      try {
        return await h(req, ctx);
      } catch (e) {
        throw toTtrpcError(e);
      }
    };
  }
  return out as H;
}
