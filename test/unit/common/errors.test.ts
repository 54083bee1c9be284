// cove's domain errors and the one table that turns them into gRPC codes at the service edges.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AlreadyExistsError,
  CancelledError,
  CoveError,
  errorMessage,
  InternalError,
  InvalidArgumentError,
  LimitError,
  NotFoundError,
  NotSupportedError,
  TimeoutError,
  UnavailableError,
  WrongStateError,
} from "../../../src/common/errors.ts";
import { grpcStatus, toTtrpcError, withGrpcStatus } from "../../../src/common/grpc-status.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";

test("each domain error has its gRPC code at the edge, its message unchanged", () => {
  const cases: Array<[CoveError, number, string]> = [
    [new NotFoundError("container c1: not found"), Code.NOT_FOUND, "COVE_ERR_NOT_FOUND"],
    [new AlreadyExistsError("c1: already exists"), Code.ALREADY_EXISTS, "COVE_ERR_ALREADY_EXISTS"],
    [new InvalidArgumentError("bad id"), Code.INVALID_ARGUMENT, "COVE_ERR_INVALID_ARG"],
    [new WrongStateError("not running"), Code.FAILED_PRECONDITION, "COVE_ERR_WRONG_STATE"],
    [new NotSupportedError("checkpoint"), Code.UNIMPLEMENTED, "COVE_ERR_NOT_SUPPORTED"],
    [new LimitError("too many"), Code.RESOURCE_EXHAUSTED, "COVE_ERR_LIMIT"],
    [new UnavailableError("VM gone"), Code.UNAVAILABLE, "COVE_ERR_UNAVAILABLE"],
    [new TimeoutError("no answer"), Code.DEADLINE_EXCEEDED, "COVE_ERR_TIMEOUT"],
    [new CancelledError("gave up"), Code.CANCELLED, "COVE_ERR_CANCELLED"],
    [new InternalError("mount failed"), Code.INTERNAL, "COVE_ERR_INTERNAL"],
    [new CoveError("something"), Code.UNKNOWN, "COVE_ERR"],
  ];
  for (const [err, code, name] of cases) {
    assert.ok(err instanceof CoveError && err instanceof Error);
    assert.equal(err.code, name);
    assert.equal(err.name, err.constructor.name);
    assert.deepEqual(grpcStatus(err), { code, message: err.message }, name);
    const t = toTtrpcError(err);
    assert.ok(t instanceof TtrpcError);
    assert.deepEqual([t.code, t.message], [code, err.message]);
  }
});

test("a TtrpcError keeps its code and identity; anything else is UNKNOWN", () => {
  const t = new TtrpcError(Code.PERMISSION_DENIED, "from the agent");
  assert.deepEqual(grpcStatus(t), { code: Code.PERMISSION_DENIED, message: "from the agent" });
  assert.equal(toTtrpcError(t), t);
  assert.deepEqual(grpcStatus(new Error("plain")), { code: Code.UNKNOWN, message: "plain" });
  assert.deepEqual(grpcStatus("a string"), { code: Code.UNKNOWN, message: "a string" });
  assert.deepEqual(grpcStatus(undefined), { code: Code.UNKNOWN, message: "undefined" });
});

test("errorMessage handles whatever was thrown", () => {
  assert.equal(errorMessage(new TypeError("t")), "t");
  assert.equal(errorMessage("s"), "s");
  assert.equal(errorMessage({ message: "m", code: 1 }), "m");
  assert.equal(errorMessage(42), "42");
  assert.equal(errorMessage(null), "null");
  assert.equal(errorMessage(Symbol("x")), "Symbol(x)");
  assert.equal(errorMessage(Object.create(null)), "[object Object]");
  const hostile = {
    toString() {
      throw new Error("no");
    },
  };
  assert.equal(errorMessage(hostile), "[object Object]");
});

test("withGrpcStatus: handlers' domain errors leave as TtrpcErrors, results unchanged", async () => {
  const h = withGrpcStatus({
    Ok: async (r: { n: number }) => ({ n: r.n + 1 }),
    Missing: async () => {
      throw new NotFoundError("process e1: not found");
    },
  });
  assert.deepEqual(await h.Ok({ n: 1 }), { n: 2 });
  await assert.rejects(
    h.Missing(),
    (e: unknown) => e instanceof TtrpcError && e.code === Code.NOT_FOUND && e.message === "process e1: not found",
  );
});
