// The errors the agent's operations throw (domain errors: the service edge gives them their gRPC
// codes, src/common/grpc-status.ts), and the id check every request goes through (ids become paths
// in the guest, so they are validated before anything else).
import {
  AlreadyExistsError,
  errorMessage,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  WrongStateError,
} from "../../../src/common/errors.ts";

export const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export const notFound = (what: string) => new NotFoundError(`${what}: not found`);
export const alreadyExists = (what: string) => new AlreadyExistsError(`${what}: already exists`);
export const invalid = (msg: string) => new InvalidArgumentError(msg);
export const precondition = (msg: string) => new WrongStateError(msg);
export const internal = (msg: string) => new InternalError(msg);

/** Throws INVALID_ARGUMENT unless `id` is a valid id; `kind` names it in the message. */
export function checkId(id: unknown, kind: string, allowEmpty = false): string {
  if (typeof id !== "string") throw invalid(`${kind} must be a string`);
  if (allowEmpty && id === "") return id;
  if (!ID_RE.test(id)) throw invalid(`${kind} ${JSON.stringify(id.slice(0, 200))} is not a valid id (${ID_RE.source})`);
  return id;
}

/** Parses JSON from a bytes field; INVALID_ARGUMENT with the field name when it is not an object. */
export function parseJsonObject(bytes: Uint8Array | undefined, field: string): Record<string, unknown> {
  if (!bytes || bytes.length === 0) throw invalid(`${field} is empty`);
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (e) {
    throw invalid(`${field} is not valid JSON: ${errorMessage(e)}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw invalid(`${field} must be a JSON object`);
  return v as Record<string, unknown>;
}
