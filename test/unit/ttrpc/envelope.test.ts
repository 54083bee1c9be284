// The hand-written envelope codec against protobufjs and proto/ttrpc/request.proto.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { messageType } from "../../../src/proto/root.ts";
import {
  decodeRequest,
  decodeResponse,
  encodeRequestFrame,
  encodeResponseFrame,
  MalformedError,
  type RequestEnvelope,
} from "../../../src/ttrpc/envelope.ts";
import { HEADER_LENGTH } from "../../../src/ttrpc/frame.ts";
import { prng } from "./pair.ts";

const Request = messageType("ttrpc.Request");
const Response = messageType("ttrpc.Response");

function randomString(rand: () => number, max: number): string {
  const alphabet = ["a", "Z", "/", ".", "é", "日", "🙂", "\u0000"];
  let s = "";
  const n = Math.floor(rand() * max);
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(rand() * alphabet.length)];
  return s;
}

function randomRequest(rand: () => number): RequestEnvelope {
  const metadata: Array<[string, string]> = [];
  const m = Math.floor(rand() * 4);
  for (let i = 0; i < m; i++) metadata.push([randomString(rand, 6), randomString(rand, 6)]);
  return {
    service: randomString(rand, 30),
    method: randomString(rand, 10),
    payload: Buffer.from(randomString(rand, 200)),
    timeoutNano: rand() < 0.5 ? 0 : Math.floor(rand() * 2 ** 50),
    metadata,
  };
}

describe("ttrpc envelope codec", () => {
  it("encodes Request exactly as protobufjs does, and decodes protobufjs output", () => {
    const rand = prng(1);
    for (let i = 0; i < 300; i++) {
      const r = randomRequest(rand);
      const frame = encodeRequestFrame(1, r);
      assert.equal(frame.readUInt32BE(0), frame.length - HEADER_LENGTH);
      assert.equal(frame[8], 1);
      const ours = frame.subarray(HEADER_LENGTH);
      const theirs = Request.encode(
        Request.fromObject({
          service: r.service,
          method: r.method,
          payload: r.payload,
          timeout_nano: r.timeoutNano,
          metadata: r.metadata.map(([key, value]) => ({ key, value })),
        }),
      ).finish();
      assert.deepEqual(Buffer.from(ours), Buffer.from(theirs));
      const back = decodeRequest(theirs);
      assert.equal(back.service, r.service);
      assert.equal(back.method, r.method);
      assert.deepEqual(Buffer.from(back.payload), Buffer.from(r.payload));
      assert.equal(back.timeoutNano, r.timeoutNano);
      assert.deepEqual(back.metadata, r.metadata);
    }
  });

  it("encodes Response without status on success, and with google.rpc.Status on error", () => {
    const ok = encodeResponseFrame(3, undefined, Buffer.from("pay"));
    const okObj = Response.toObject(Response.decode(ok.subarray(HEADER_LENGTH)));
    assert.equal(okObj.status, undefined);
    assert.equal(Buffer.from(okObj.payload).toString(), "pay");
    assert.equal(ok[8], 2);
    assert.equal(ok.readUInt32BE(4), 3);

    const empty = encodeResponseFrame(5, undefined, new Uint8Array(0));
    assert.equal(empty.length, HEADER_LENGTH, "Empty result is a zero-length frame payload");

    for (const code of [1, 5, 16, 2 ** 31 - 1, -1, -(2 ** 31)]) {
      const f = encodeResponseFrame(7, { code, message: `m${code}é` }, new Uint8Array(0));
      const o = Response.toObject(Response.decode(f.subarray(HEADER_LENGTH)));
      assert.equal(o.status.code, code);
      assert.equal(o.status.message, `m${code}é`);
      const d = decodeResponse(f.subarray(HEADER_LENGTH));
      assert.deepEqual(d.status, { code, message: `m${code}é` });
    }
  });

  it("decodes Status details and unknown fields by skipping them", () => {
    const bytes = Response.encode(
      Response.fromObject({
        status: { code: 9, message: "busy", details: [{ type_url: "x/y", value: Buffer.from([1, 2]) }] },
        payload: Buffer.from([9]),
      }),
    ).finish();
    // Append unknown fields of every wire type: varint, fixed64, length-delimited, fixed32.
    const extra = Buffer.from([0x18, 0x96, 0x01, 0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x2a, 0x01, 0x00, 0x35, 1, 2, 3, 4]);
    const d = decodeResponse(Buffer.concat([bytes, extra]));
    assert.deepEqual(d.status, { code: 9, message: "busy" });
    assert.deepEqual([...d.payload], [9]);
  });

  it("rejects malformed input with MalformedError", () => {
    const cases: Array<[string, number[]]> = [
      ["truncated varint", [0x20, 0xff]],
      ["length past end", [0x0a, 0x05, 0x61]],
      ["field number 0", [0x02, 0x00]],
      ["group wire type", [0x0b]],
      ["wrong wire type for service", [0x08, 0x01]],
      ["varint too long", [0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
      ["truncated fixed64", [0x09, 1, 2]],
      ["bad nested metadata", [0x2a, 0x02, 0x0a, 0x05]],
    ];
    for (const [what, bytes] of cases) {
      assert.throws(() => decodeRequest(Buffer.from(bytes)), MalformedError, what);
    }
    assert.throws(() => decodeResponse(Buffer.from([0x0a, 0x03, 0x08])), MalformedError);
  });

  it("decodes a negative timeout as negative and payload as a view", () => {
    const bytes = Request.encode(Request.fromObject({ timeout_nano: -5, payload: Buffer.from("abc") })).finish();
    const d = decodeRequest(bytes);
    assert.equal(d.timeoutNano, -5);
    assert.equal(d.payload.buffer, bytes.buffer);
  });
});
