// Interop with Go ttrpc: our client against containerd-shim-runc-v2 (containerd 1.6, ttrpc 1.1),
// and a differential check: the same edge-case frames sent to the Go server and to ours get the
// same answers. Needs root and containerd installed (CI has both); otherwise skips, loudly.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { messageType } from "../../../../src/proto/root.ts";
import { encodeRequestFrame } from "../../../../src/ttrpc/envelope.ts";
import { encodeFrame, writeHeader } from "../../../../src/ttrpc/frame.ts";
import { Code, connectUnix, TtrpcServer } from "../../../../src/ttrpc/index.ts";
import { type RuncShim, runcShimUnavailable, startRuncShim } from "../../../harness/runc-shim.ts";
import { RawPeer } from "../../ttrpc/pair.ts";

const TASK = "containerd.task.v2.Task";
const unavailable = runcShimUnavailable();
if (unavailable) console.error(`\n!!! SKIPPING ttrpc interop with containerd-shim-runc-v2: ${unavailable}\n`);

const ConnectRequest = messageType("containerd.task.v2.ConnectRequest");

function req(id: number, service: string, method: string, payload: Uint8Array = new Uint8Array()): Buffer {
  return encodeRequestFrame(id, { service, method, payload, timeoutNano: 0, metadata: [] });
}

/** Sends edge-case frames on one connection; returns streamId → status code (0 = OK) of every answer. */
async function probe(socket: string): Promise<Map<number, number>> {
  const s = createConnection(socket);
  await new Promise<void>((resolve, reject) => {
    s.once("connect", resolve);
    s.once("error", reject);
  });
  const peer = new RawPeer(s);
  const connectPayload = ConnectRequest.encode({ id: "t1" }).finish();
  const oversize = Buffer.alloc(10 + (4 << 20) + 1);
  writeHeader(oversize, (4 << 20) + 1, 5, 1, 0);
  peer.write(req(1, TASK, "Connect", connectPayload)); // ok
  peer.write(req(2, TASK, "Connect", connectPayload)); // even id
  peer.write(req(3, "no.such.Service", "X")); // unknown service
  peer.write(oversize); // id 5, oversized
  peer.write(encodeFrame(7, 1, 0, Buffer.from([0x0a, 0x7f]))); // malformed Request
  peer.write(req(9, TASK, "NoSuchMethod")); // unknown method
  peer.write(encodeFrame(11, 0x7e, 0, Buffer.from("?"))); // unknown frame type: ignored
  peer.write(req(13, TASK, "Connect", connectPayload)); // still alive
  try {
    await peer.waitResponses(7, 10_000);
    await new Promise((r) => setTimeout(r, 50)); // anything extra (there should be nothing) shows up
    return new Map(peer.responses.map((r) => [r.header.streamId, r.response.status?.code ?? 0]));
  } finally {
    s.destroy();
  }
}

describe("ttrpc interop with containerd-shim-runc-v2", { skip: unavailable }, () => {
  let shim: RuncShim;
  before(async () => {
    shim = await startRuncShim();
  });
  after(async () => {
    await shim?.stop();
  });

  it("our client calls the Go server: Connect, NotFound mapping, 256 concurrent calls", async () => {
    const client = await connectUnix(shim.socket, { timeoutMs: 2000 });
    try {
      const r = await client.call<{ shim_pid: number; task_pid: number }>(
        TASK,
        "Connect",
        { id: "t1" },
        { timeoutMs: 5000 },
      );
      assert.equal(r.shim_pid, shim.pid);
      assert.equal(r.task_pid, 0);
      await assert.rejects(
        client.call(TASK, "State", { id: "nope" }, { metadata: { a: "b" } }),
        (e: { code: number; message: string }) => {
          assert.equal(e.code, Code.NOT_FOUND);
          assert.match(e.message, /not created|not found/);
          return true;
        },
      );
      const many = await Promise.all(
        Array.from({ length: 256 }, () => client.call<{ shim_pid: number }>(TASK, "Connect", { id: "t1" })),
      );
      assert.ok(many.every((m) => m.shim_pid === shim.pid));
      assert.equal(client.inFlight, 0);
    } finally {
      client.close();
    }
  });

  it("answers edge-case frames exactly like the Go server", async () => {
    const goAnswers = await probe(shim.socket);
    const dir = mkdtempSync(join(tmpdir(), "cove-ttrpc-diff-"));
    const server = new TtrpcServer();
    server.registerService(TASK, { Connect: async () => ({ shim_pid: 1, task_pid: 0, version: "" }) });
    const net = createServer();
    server.listen(net);
    try {
      await new Promise<void>((r) => net.listen(join(dir, "s.sock"), r));
      const ours = await probe(join(dir, "s.sock"));
      const expected = new Map([
        [1, Code.OK],
        [2, Code.INVALID_ARGUMENT],
        [3, Code.UNIMPLEMENTED],
        [5, Code.RESOURCE_EXHAUSTED],
        [7, Code.INVALID_ARGUMENT],
        [9, Code.UNIMPLEMENTED],
        [13, Code.OK],
      ]);
      assert.deepEqual([...goAnswers].sort(), [...expected].sort(), "Go server behaves as the notes say");
      assert.deepEqual([...ours].sort(), [...goAnswers].sort(), "ours matches Go");
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
