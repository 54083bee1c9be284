// gRPC status codes (google.rpc.Code) and the error type that carries one across ttrpc.

export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type CodeValue = (typeof Code)[keyof typeof Code];

const names: string[] = [];
for (const [name, value] of Object.entries(Code)) names[value] = name;

/** "NOT_FOUND" for 5; "CODE(42)" for a code outside the table (a peer may send anything). */
export function codeName(code: number): string {
  return names[code] ?? `CODE(${code})`;
}

/** An error with a gRPC code: what a handler throws and what a client call rejects with. */
export class TtrpcError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.name = "TtrpcError";
    this.code = code;
  }
}

/** The code and message a thrown value becomes on the wire: TtrpcError keeps its code, anything else is UNKNOWN. */
export function toStatus(err: unknown): { code: number; message: string } {
  if (err instanceof TtrpcError) return { code: err.code, message: err.message };
  if (err instanceof Error) return { code: Code.UNKNOWN, message: err.message };
  return { code: Code.UNKNOWN, message: String(err) };
}
