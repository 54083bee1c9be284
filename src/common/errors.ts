// cove's own errors: what went wrong, in the domain's words, with a stable string code (in the
// manner of undici's errors: one base class, one subclass per kind, `code` to test on). They know
// nothing of gRPC: the service edges (the shim's task service, the agent's service and stdio port)
// turn them into gRPC codes in one place, src/common/grpc-status.ts. Code below the edges throws
// these (or lets a plain Error through: that reaches containerd as UNKNOWN).

export class CoveError extends Error {
  readonly code: string = "COVE_ERR";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A kind of CoveError: its subclasses differ only in their code (and name). */
function kind<C extends string>(code: C) {
  return class extends CoveError {
    override readonly code: C = code;
  };
}

/** What a request names does not exist: a container, a process, a storage, a device. */
export class NotFoundError extends kind("COVE_ERR_NOT_FOUND") {}
/** What a request would create exists already. */
export class AlreadyExistsError extends kind("COVE_ERR_ALREADY_EXISTS") {}
/** A request (or a spec, a config value) that is malformed or cannot be honoured as given. */
export class InvalidArgumentError extends kind("COVE_ERR_INVALID_ARG") {}
/** The request is well-formed but the state of things does not allow it now (Start twice, no KVM). */
export class WrongStateError extends kind("COVE_ERR_WRONG_STATE") {}
/** cove does not do this (checkpoints, a feature the guest kernel lacks). */
export class NotSupportedError extends kind("COVE_ERR_NOT_SUPPORTED") {}
/** A limit was reached: a queue, a cache, a size. */
export class LimitError extends kind("COVE_ERR_LIMIT") {}
/** The VM, the agent or a peer is gone or not reachable; a retry may work. */
export class UnavailableError extends kind("COVE_ERR_UNAVAILABLE") {}
/** Something did not answer or finish in time. */
export class TimeoutError extends kind("COVE_ERR_TIMEOUT") {}
/** The caller gave up (its deadline passed, its connection closed). */
export class CancelledError extends kind("COVE_ERR_CANCELLED") {}
/** cove or the guest failed at something that should have worked: a mount, a syscall, a tool. */
export class InternalError extends kind("COVE_ERR_INTERNAL") {}

/**
 * The message of anything thrown: an Error's message, a string as it is, an object's string
 * `message`, else its String() (never throws, whatever was thrown).
 */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  if (typeof e === "object" && e !== null && typeof (e as { message?: unknown }).message === "string")
    return (e as { message: string }).message;
  try {
    return String(e);
  } catch {
    return Object.prototype.toString.call(e);
  }
}
