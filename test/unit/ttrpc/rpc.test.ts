// Client and server together (in-memory pair and a real unix socket), and the server against a
// raw peer that sends what a well-behaved client never would.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { encodeRequestFrame } from "../../../src/ttrpc/envelope.ts";
import { encodeFrame } from "../../../src/ttrpc/frame.ts";
import { Code, connectUnix, TtrpcClient, TtrpcError, TtrpcServer } from "../../../src/ttrpc/index.ts";
import { withTimeout } from "../../harness/timeout.ts";
import { duplexPair, RawPeer } from "./pair.ts";

const enc = (s: string) => Buffer.from(s);
const dec = (b: Uint8Array) => Buffer.from(b).toString();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(opts: { maxMessageSize?: number } = {}): { server: TtrpcServer; client: TtrpcClient } {
  const server = new TtrpcServer(opts);
  const [a, b] = duplexPair();
  server.serve(a);
  const client = new TtrpcClient(b, opts);
  cleanups.push(async () => {
    client.close();
    await client.closed;
    await server.close();
  });
  return { server, client };
}

function rawSetup(opts: { maxMessageSize?: number } = {}): { server: TtrpcServer; peer: RawPeer } {
  const server = new TtrpcServer(opts);
  const [a, b] = duplexPair();
  server.serve(a);
  const peer = new RawPeer(b);
  cleanups.push(async () => {
    b.destroy();
    await server.close();
  });
  return { server, peer };
}

function request(id: number, service: string, method: string, payload = "", timeoutNano = 0): Buffer {
  return encodeRequestFrame(id, { service, method, payload: enc(payload), timeoutNano, metadata: [] });
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached in time");
    await sleep(2);
  }
}

describe("ttrpc client ↔ server", () => {
  it("echoes payloads and passes metadata (repeated keys kept in order)", async () => {
    const { server, client } = setup();
    server.registerRaw("t.S", "Echo", async (p, ctx) => {
      assert.equal(ctx.service, "t.S");
      assert.equal(ctx.method, "Echo");
      return enc(JSON.stringify({ md: ctx.metadata, p: dec(p), deadline: ctx.deadline ?? null }));
    });
    const out = JSON.parse(
      dec(await client.callRaw("t.S", "Echo", enc("hi"), { metadata: { a: ["1", "2"], b: "x" } })),
    );
    assert.deepEqual(out, { md: { a: ["1", "2"], b: ["x"] }, p: "hi", deadline: null });
    const empty = await client.callRaw("t.S", "Echo", new Uint8Array(0));
    assert.deepEqual(JSON.parse(dec(empty)), { md: {}, p: "", deadline: null });
  });

  it("answers many calls in flight out of order; a slow handler blocks nobody", async () => {
    const { server, client } = setup();
    const order: number[] = [];
    const delays = [80, 5, 40, 0, 20, 60, 10];
    // Every handler waits until all calls are in the server, then sleeps its delay: the timers all
    // start in one turn, so they end in delay order however late a loaded machine delivers a call.
    let arrived = 0;
    let allIn!: () => void;
    const allInFlight = new Promise<void>((r) => {
      allIn = r;
    });
    server.registerRaw("t.S", "Delay", async (p) => {
      const ms = Number(dec(p));
      if (++arrived === delays.length) allIn();
      await allInFlight;
      await sleep(ms);
      order.push(ms);
      return p;
    });
    const results = await Promise.all(delays.map((d) => client.callRaw("t.S", "Delay", enc(String(d)))));
    assert.deepEqual(results.map(dec), delays.map(String), "each caller gets its own answer");
    assert.deepEqual(
      order,
      [...delays].sort((x, y) => x - y),
      "completed in delay order, not call order",
    );
    assert.equal(client.inFlight, 0);
    assert.equal(server.stats().inFlight, 0);
  });

  it("maps errors: TtrpcError keeps its code, other errors become UNKNOWN with their message", async () => {
    const { server, client } = setup();
    server.registerRaw("t.S", "NotFound", async () => {
      throw new TtrpcError(Code.NOT_FOUND, "container not created");
    });
    server.registerRaw("t.S", "Plain", async () => {
      throw new Error("boom");
    });
    server.registerRaw("t.S", "Sync", (() => {
      throw new TypeError("sync throw");
    }) as never);
    server.registerRaw("t.S", "Str", async () => {
      throw "a string";
    });
    const expect = async (method: string, code: number, message: string) => {
      await assert.rejects(client.callRaw("t.S", method, new Uint8Array()), (e: unknown) => {
        assert.ok(e instanceof TtrpcError);
        assert.equal(e.code, code);
        assert.equal(e.message, message);
        return true;
      });
    };
    await expect("NotFound", Code.NOT_FOUND, "container not created");
    await expect("Plain", Code.UNKNOWN, "boom");
    await expect("Sync", Code.UNKNOWN, "sync throw");
    await expect("Str", Code.UNKNOWN, "a string");
    await expect("Missing", Code.UNIMPLEMENTED, "method t.S/Missing");
    await assert.rejects(client.callRaw("no.Such", "X", new Uint8Array()), {
      code: Code.UNIMPLEMENTED,
      message: "service no.Such",
    });
  });

  it("client timeout: DEADLINE_EXCEEDED locally, timeout_nano sent, server aborts the handler", async () => {
    const { server, client } = setup();
    let seen: { deadline?: number; aborted?: unknown } = {};
    server.registerRaw("t.S", "Hang", (_p, ctx) => {
      seen = { deadline: ctx.deadline };
      return new Promise((_resolve, reject) => {
        ctx.signal.addEventListener("abort", () => {
          seen.aborted = ctx.signal.reason;
          reject(ctx.signal.reason);
        });
      });
    });
    const t0 = Date.now();
    await assert.rejects(client.callRaw("t.S", "Hang", new Uint8Array(), { timeoutMs: 60 }), {
      code: Code.DEADLINE_EXCEEDED,
    });
    const took = Date.now() - t0;
    assert.ok(took >= 55 && took < 1000, `took ${took} ms`);
    assert.ok(seen.deadline && Math.abs(seen.deadline - (t0 + 60)) < 50, "deadline derived from timeout_nano");
    await waitFor(() => seen.aborted !== undefined);
    assert.equal((seen.aborted as TtrpcError).code, Code.DEADLINE_EXCEEDED);
    await waitFor(() => server.stats().inFlight === 0);
    assert.equal(client.inFlight, 0);
  });

  it("server answers DEADLINE_EXCEEDED at timeout_nano even if the handler never finishes", async () => {
    const { server, peer } = rawSetup();
    let aborted = false;
    server.registerRaw("t.S", "Hang", (_p, ctx) => {
      ctx.signal.addEventListener("abort", () => {
        aborted = true;
      });
      return new Promise(() => {});
    });
    peer.write(request(1, "t.S", "Hang", "", 30e6));
    const [r] = await peer.waitResponses(1);
    assert.equal(r!.header.streamId, 1);
    assert.equal(r!.response.status?.code, Code.DEADLINE_EXCEEDED);
    assert.ok(aborted);
    assert.equal(server.stats().inFlight, 0);
  });

  it("AbortSignal cancels a call (CANCELLED), already-aborted signals reject at once", async () => {
    const { server, client } = setup();
    server.registerRaw("t.S", "Hang", () => new Promise(() => {}));
    const ac = new AbortController();
    const p = client.callRaw("t.S", "Hang", new Uint8Array(), { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, { code: Code.CANCELLED });
    await assert.rejects(client.callRaw("t.S", "Hang", new Uint8Array(), { signal: ac.signal }), {
      code: Code.CANCELLED,
    });
    assert.equal(client.inFlight, 0);
  });

  it("close rejects pending calls with UNAVAILABLE, later calls too; handlers see abort", async () => {
    const { server, client } = setup();
    let abortedReason: unknown;
    server.registerRaw("t.S", "Hang", (_p, ctx) => {
      ctx.signal.addEventListener("abort", () => {
        abortedReason = ctx.signal.reason;
      });
      return new Promise(() => {});
    });
    const p1 = client.callRaw("t.S", "Hang", new Uint8Array());
    const p2 = client.callRaw("t.S", "Hang", new Uint8Array(), { timeoutMs: 10_000 });
    await waitFor(() => server.stats().inFlight === 2);
    client.close();
    await assert.rejects(p1, { code: Code.UNAVAILABLE, message: "ttrpc: closed" });
    await assert.rejects(p2, { code: Code.UNAVAILABLE, message: "ttrpc: closed" });
    await withTimeout(client.closed, 1000, "client.closed");
    await assert.rejects(client.callRaw("t.S", "Hang", new Uint8Array()), { code: Code.UNAVAILABLE });
    await waitFor(() => server.stats().connections === 0);
    assert.equal((abortedReason as TtrpcError).code, Code.UNAVAILABLE);
    assert.equal(server.stats().inFlight, 0);
  });

  it("server.close() ends connections: the client's pending calls fail UNAVAILABLE", async () => {
    const { server, client } = setup();
    server.registerRaw("t.S", "Hang", () => new Promise(() => {}));
    const p = client.callRaw("t.S", "Hang", new Uint8Array());
    await waitFor(() => server.stats().inFlight === 1);
    await server.close();
    await assert.rejects(p, { code: Code.UNAVAILABLE });
    assert.deepEqual(server.stats(), { connections: 0, inFlight: 0 });
  });

  it("client refuses to send more than the limit; an oversized response becomes RESOURCE_EXHAUSTED", async () => {
    const { server, client } = setup({ maxMessageSize: 1024 });
    server.registerRaw("t.S", "Big", async (p) => new Uint8Array(Number(dec(p))));
    await assert.rejects(client.callRaw("t.S", "Big", new Uint8Array(2000)), { code: Code.RESOURCE_EXHAUSTED });
    assert.equal((await client.callRaw("t.S", "Big", enc("1000"))).length, 1000);
    await assert.rejects(client.callRaw("t.S", "Big", enc("5000")), { code: Code.RESOURCE_EXHAUSTED });
    assert.equal((await client.callRaw("t.S", "Big", enc("10"))).length, 10, "connection survives");
  });

  it("client rejects a response larger than its own limit and keeps the connection", async () => {
    const server = new TtrpcServer({ maxMessageSize: 1 << 20 });
    const [a, b] = duplexPair();
    server.serve(a);
    const client = new TtrpcClient(b, { maxMessageSize: 1024 });
    cleanups.push(async () => {
      client.close();
      await server.close();
    });
    server.registerRaw("t.S", "Big", async (p) => new Uint8Array(Number(dec(p))));
    await assert.rejects(client.callRaw("t.S", "Big", enc("4096")), { code: Code.RESOURCE_EXHAUSTED });
    assert.equal((await client.callRaw("t.S", "Big", enc("7"))).length, 7);
  });

  it("works over a real unix socket with connectUnix (unix:// prefix accepted)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-ttrpc-"));
    const path = join(dir, "s.sock");
    const server = new TtrpcServer();
    const net = createServer();
    server.listen(net);
    await new Promise<void>((r) => net.listen(path, r));
    cleanups.push(async () => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    });
    server.registerRaw("t.S", "Echo", async (p) => p);
    const client = await connectUnix(`unix://${path}`, { timeoutMs: 1000 });
    const big = Buffer.alloc(3 << 20, 0xab);
    const [r1, r2] = await Promise.all([
      client.callRaw("t.S", "Echo", big),
      client.callRaw("t.S", "Echo", enc("small")),
    ]);
    assert.ok(Buffer.from(r1).equals(big));
    assert.equal(dec(r2), "small");
    client.close();
    await client.closed;
    await assert.rejects(connectUnix(join(dir, "nope.sock"), { timeoutMs: 500 }), { code: Code.UNAVAILABLE });
  });
});

describe("ttrpc server protocol checks (raw peer)", () => {
  function echoServer(opts: { maxMessageSize?: number } = {}) {
    const s = rawSetup(opts);
    s.server.registerRaw("t.S", "Echo", async (p) => p);
    return s;
  }

  it("rejects even stream ids with INVALID_ARGUMENT and keeps serving", async () => {
    const { peer } = echoServer();
    peer.write(request(2, "t.S", "Echo", "x"));
    peer.write(request(1, "t.S", "Echo", "y"));
    const [r1, r2] = await peer.waitResponses(2);
    assert.equal(r1!.header.streamId, 2);
    assert.equal(r1!.response.status?.code, Code.INVALID_ARGUMENT);
    assert.equal(r2!.header.streamId, 1);
    assert.equal(r2!.response.status, undefined);
    assert.equal(dec(r2!.response.payload), "y");
  });

  it("rejects re-used and decreasing stream ids", async () => {
    const { peer } = echoServer();
    peer.write(request(5, "t.S", "Echo", "a"));
    peer.write(request(5, "t.S", "Echo", "b"));
    peer.write(request(3, "t.S", "Echo", "c"));
    peer.write(request(7, "t.S", "Echo", "d"));
    const rs = await peer.waitResponses(4);
    const byPayload = rs.map((r) => [r.header.streamId, r.response.status?.code ?? 0, dec(r.response.payload)]);
    assert.deepEqual(
      byPayload.sort(),
      [
        [3, Code.INVALID_ARGUMENT, ""],
        [5, 0, "a"],
        [5, Code.INVALID_ARGUMENT, ""],
        [7, 0, "d"],
      ].sort(),
    );
  });

  it("answers an oversized request with RESOURCE_EXHAUSTED, skipping its bytes; the connection survives", async () => {
    const { peer, server } = echoServer({ maxMessageSize: 256 });
    const big = request(1, "t.S", "Echo", "z".repeat(1000));
    // Split the oversized frame and the following valid one across odd chunk boundaries.
    const both = Buffer.concat([big, request(3, "t.S", "Echo", "after")]);
    for (let o = 0; o < both.length; o += 97) peer.write(both.subarray(o, o + 97));
    const [r1, r2] = await peer.waitResponses(2);
    assert.equal(r1!.header.streamId, 1);
    assert.equal(r1!.response.status?.code, Code.RESOURCE_EXHAUSTED);
    assert.match(r1!.response.status!.message, /exceed maximum message size of 256/);
    assert.equal(r2!.header.streamId, 3);
    assert.equal(dec(r2!.response.payload), "after");
    assert.equal(server.stats().connections, 1);
  });

  it("answers a malformed Request with INVALID_ARGUMENT", async () => {
    const { peer } = echoServer();
    peer.write(encodeFrame(1, 1, 0, Buffer.from([0x0a, 0x7f, 0x61])));
    peer.write(request(3, "t.S", "Echo", "ok"));
    const [r1, r2] = await peer.waitResponses(2);
    assert.equal(r1!.response.status?.code, Code.INVALID_ARGUMENT);
    assert.match(r1!.response.status!.message, /unmarshal request error/);
    assert.equal(dec(r2!.response.payload), "ok");
  });

  it("ignores responses, data frames and unknown types", async () => {
    const { peer } = echoServer();
    peer.write(encodeFrame(1, 2, 0, Buffer.from("resp")));
    peer.write(encodeFrame(1, 3, 1, Buffer.from("data")));
    peer.write(encodeFrame(9, 0x7e, 0, Buffer.from("???")));
    peer.write(request(11, "t.S", "Echo", "still here"));
    const [r] = await peer.waitResponses(1);
    assert.equal(r!.header.streamId, 11);
    assert.equal(dec(r!.response.payload), "still here");
    await sleep(20);
    assert.equal(peer.responses.length, 1, "nothing else was answered");
  });

  it("forgets a connection's calls when the peer goes away", async () => {
    const { peer, server } = rawSetup();
    let aborts = 0;
    server.registerRaw("t.S", "Hang", (_p, ctx) => {
      ctx.signal.addEventListener("abort", () => aborts++);
      return new Promise(() => {});
    });
    for (let id = 1; id <= 9; id += 2) peer.write(request(id, "t.S", "Hang", "", 60e9));
    await waitFor(() => server.stats().inFlight === 5);
    peer.stream.destroy();
    await waitFor(() => server.stats().connections === 0);
    assert.equal(server.stats().inFlight, 0);
    assert.equal(aborts, 5);
  });
});

describe("typed services from proto/", () => {
  it("registerService + call: snake_case objects, Timestamp and Any, Empty as zero bytes", async () => {
    const { server, client } = setup();
    server.registerService("containerd.task.v2.Task", {
      Connect: async (req: { id: string }) => ({ shim_pid: 42, task_pid: req.id === "c1" ? 7 : 0, version: "v2" }),
      Wait: async () => ({ exit_status: 3, exited_at: { seconds: 1700000000, nanos: 5 } }),
      Pause: async () => ({}),
      Kill: async (req: { signal: number; all: boolean }) => {
        if (req.signal !== 9 || req.all !== true) throw new TtrpcError(Code.INVALID_ARGUMENT, "bad kill");
        return {};
      },
    });
    assert.deepEqual(await client.call("containerd.task.v2.Task", "Connect", { id: "c1" }), {
      shim_pid: 42,
      task_pid: 7,
      version: "v2",
    });
    const w = await client.call<{ exit_status: number; exited_at: { seconds: number; nanos: number } }>(
      "containerd.task.v2.Task",
      "Wait",
      { id: "c1" },
    );
    assert.equal(w.exit_status, 3);
    assert.deepEqual(w.exited_at, { seconds: 1700000000, nanos: 5 });
    // Empty result: zero-length payload on the wire.
    assert.equal((await client.callRaw("containerd.task.v2.Task", "Pause", new Uint8Array())).length, 0);
    assert.deepEqual(await client.call("containerd.task.v2.Task", "Kill", { id: "c1", signal: 9, all: true }), {});
    await assert.rejects(client.call("containerd.task.v2.Task", "Kill", { id: "c1", signal: 15 }), {
      code: Code.INVALID_ARGUMENT,
    });
    await assert.rejects(client.call("containerd.task.v2.Task", "State", { id: "c1" }), {
      code: Code.UNIMPLEMENTED,
    });
  });

  it("passes an Any with bytes through Events/Forward", async () => {
    const { server, client } = setup();
    let got: Record<string, unknown> | undefined;
    server.registerService("containerd.services.events.ttrpc.v1.Events", {
      Forward: async (req) => {
        got = req as unknown as Record<string, unknown>;
        return {};
      },
    });
    await client.call("containerd.services.events.ttrpc.v1.Events", "Forward", {
      envelope: {
        timestamp: { seconds: 12, nanos: 34 },
        namespace: "default",
        topic: "/tasks/exit",
        event: { type_url: "containerd.events.TaskExit", value: Buffer.from([1, 2, 3]) },
      },
    });
    const env = got!.envelope as { timestamp: unknown; topic: string; event: { type_url: string; value: Buffer } };
    assert.deepEqual(env.timestamp, { seconds: 12, nanos: 34 });
    assert.equal(env.topic, "/tasks/exit");
    assert.equal(env.event.type_url, "containerd.events.TaskExit");
    assert.ok(Buffer.isBuffer(env.event.value));
    assert.deepEqual([...env.event.value], [1, 2, 3]);
  });

  it("refuses an impl key that is not a method, and an unknown service", () => {
    const server = new TtrpcServer();
    assert.throws(
      () => server.registerService("containerd.task.v2.Task", { Nope: async () => ({}) } as never), // on purpose
      /no method Nope/,
    );
    assert.throws(() => server.registerService("no.such.Service" as never, {}), { code: Code.UNIMPLEMENTED });
  });
});

describe("ttrpc backpressure", () => {
  it("stops reading requests while a peer does not read its responses, resumes when it does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-ttrpc-bp-"));
    const path = join(dir, "s.sock");
    const server = new TtrpcServer({ maxMessageSize: 1 << 20 });
    let handled = 0;
    server.registerRaw("t.S", "Big", async () => {
      handled++;
      return new Uint8Array(512 * 1024);
    });
    const net = createServer();
    server.listen(net);
    await new Promise<void>((r) => net.listen(path, r));
    const { createConnection } = await import("node:net");
    const sock = createConnection(path);
    cleanups.push(async () => {
      sock.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    });
    await new Promise<void>((r) => sock.once("connect", r));
    sock.pause(); // a peer that does not read
    const N = 200;
    // Requests keep coming in small batches over time (all requests of one chunk are accepted at once).
    for (let i = 0; i < N; i++) {
      sock.write(request(2 * i + 1, "t.S", "Big"));
      if (i % 5 === 4) await sleep(5);
    }
    await sleep(100);
    // 2 MiB of queued output pauses reading; socket buffers hold a little more.
    assert.ok(handled < N / 2, `server kept reading: ${handled} of ${N} handled with nobody reading`);
    assert.ok(handled > 0);
    const peer = new RawPeer(sock);
    sock.resume();
    await peer.waitResponses(N, 20_000);
    assert.equal(handled, N);
    assert.ok(peer.responses.every((r) => r.response.status === undefined && r.response.payload.length === 512 * 1024));
  });
});
