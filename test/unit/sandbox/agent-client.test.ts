// The shim's agent client against agents that do not behave: one that never answers (every
// request/response call ends at its deadline, the long polls end at close) and one whose errors
// carry codes outside gRPC's table and megabytes of terminal escapes.
import assert from "node:assert/strict";
import type { Duplex } from "node:stream";
import { test } from "node:test";
import {
  AGENT_DEADLINES_MS,
  AGENT_SERVICE,
  AgentClient,
  type DeadlineMethod,
  LONG_POLLS,
  MAX_AGENT_ERROR,
} from "../../../src/sandbox/agent/index.ts";
import { lookupService } from "../../../src/ttrpc/codec.ts";
import { Code, TtrpcError, TtrpcServer } from "../../../src/ttrpc/index.ts";
import { duplexPair } from "../ttrpc/pair.ts";

/** Every request/response call of the client, with a plausible request. */
function calls(a: AgentClient): Record<DeadlineMethod, () => Promise<unknown>> {
  return {
    CreateSandbox: () => a.createSandbox({}),
    CreateContainer: () => a.createContainer({ container_id: "c", spec: {}, rootfs: {} }),
    SyncFiles: () => a.syncFiles({ storage_id: "s", entries: [] }),
    ConfigureNetwork: () => a.configureNetwork({ interfaces: [] }),
    StartContainer: () => a.startContainer("c"),
    ExecProcess: () => a.execProcess({ container_id: "c", exec_id: "e", process: {} }),
    RemoveContainer: () => a.removeContainer("c"),
    DestroySandbox: () => a.destroySandbox(),
    DeleteProcess: () => a.deleteProcess("c", "e"),
    PauseContainer: () => a.pauseContainer("c"),
    ResumeContainer: () => a.resumeContainer("c"),
    UpdateContainer: () => a.updateContainer("c", {}),
    Check: () => a.check(),
    SignalProcess: () => a.signalProcess("c", "", 9),
    StateContainer: () => a.stateContainer("c"),
    ListPids: () => a.listPids("c"),
    StatsContainer: () => a.statsContainer("c"),
    ResizeTty: () => a.resizeTty({ containerId: "c", execId: "", rows: 24, cols: 80 }),
    CloseStdin: () => a.closeStdin("c"),
  };
}

test("every method of the agent API has a deadline or is a long poll", () => {
  const methods = Object.keys(lookupService(AGENT_SERVICE).methods).sort();
  const covered = [...Object.keys(AGENT_DEADLINES_MS), ...LONG_POLLS].sort();
  assert.deepEqual(covered, methods);
  for (const ms of Object.values(AGENT_DEADLINES_MS)) assert.ok(ms >= 30_000 && ms <= 120_000);
});

test("a silent agent: every call ends at its deadline, the long polls and stdio at close", {
  timeout: 10_000,
}, async () => {
  const [host, guest] = duplexPair();
  guest.on("data", () => {}); // reads everything, answers nothing
  const stdioGuests: Duplex[] = [];
  const deadlines = Object.fromEntries(Object.keys(AGENT_DEADLINES_MS).map((m) => [m, 100])) as Record<
    DeadlineMethod,
    number
  >;
  const agent = await AgentClient.connect(
    async (ch) => {
      if (ch === "rpc") return host;
      const [h, g] = duplexPair();
      g.once("data", () => g.write("ok\n")); // the handshake is answered; then nothing
      stdioGuests.push(g);
      return h;
    },
    { deadlines },
  );
  const t0 = Date.now();
  const results = await Promise.all(
    Object.entries(calls(agent)).map(([m, f]) =>
      f().then(
        () => assert.fail(`${m} resolved`),
        (e: unknown) => [m, e] as const,
      ),
    ),
  );
  const took = Date.now() - t0;
  for (const [m, e] of results) {
    assert.ok(e instanceof TtrpcError, m);
    assert.equal(e.code, Code.DEADLINE_EXCEEDED, m);
    assert.match(e.message, new RegExp(`did not answer ${m} within 100 ms`));
  }
  assert.ok(took < 2000, `deadlines of 100 ms took ${took} ms`);
  assert.equal(agent.rpc.inFlight, 0);

  // The long polls wait, without a deadline, until teardown.
  const wait = agent.waitProcess("c").catch((e: unknown) => e);
  const oom = agent.getOomEvent().catch((e: unknown) => e);
  const out = await agent.openStdio("c", "", "stdout");
  const outClosed = new Promise((r) => out.once("close", r));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(agent.rpc.inFlight, 2);
  assert.equal(out.destroyed, false);
  agent.close();
  for (const e of [await wait, await oom]) {
    assert.ok(e instanceof TtrpcError);
    assert.equal(e.code, Code.UNAVAILABLE);
  }
  await outClosed;
  assert.equal(agent.rpc.inFlight, 0);
});

test("an agent's error reaches containerd with a known code and a bounded, escaped message", async () => {
  const server = new TtrpcServer();
  const codes = [999, -1, 0x7fffffff, Code.NOT_FOUND];
  let n = 0;
  const huge = `\x1b[2J\x1b]0;pwned\x07\r${"\u202e".repeat(10)}${"x".repeat(1 << 20)}`;
  for (const m of Object.keys(lookupService(AGENT_SERVICE).methods)) {
    server.registerRaw(AGENT_SERVICE, m, async () => {
      throw new TtrpcError(codes[n++ % codes.length]!, huge);
    });
  }
  const [host, guest] = duplexPair();
  server.serve(guest);
  const agent = await AgentClient.connect(async () => host);
  try {
    for (let i = 0; i < codes.length; i++) {
      const e = await agent.listPids("c").then(
        () => assert.fail("resolved"),
        (err: unknown) => err,
      );
      assert.ok(e instanceof TtrpcError);
      assert.equal(e.code, codes[i] === Code.NOT_FOUND ? Code.NOT_FOUND : Code.UNKNOWN);
      assert.ok(e.message.length <= MAX_AGENT_ERROR, `message of ${e.message.length} characters`);
      // biome-ignore lint/suspicious/noControlCharactersInRegex: checking that none is left.
      assert.doesNotMatch(e.message, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/);
      assert.ok(e.message.startsWith("\\x1b[2J\\x1b]0;pwned\\x07\\x0d\\u202e"), e.message.slice(0, 40));
    }
  } finally {
    agent.close();
    await server.close();
  }
});

test("a stdio answer line is bounded even when it ends within one read", async () => {
  const [rpcHost] = duplexPair();
  const agent = await AgentClient.connect(async (ch) => {
    if (ch === "rpc") return rpcHost;
    const [h, g] = duplexPair();
    g.once("data", () => g.write(`error 5 ${"\x1b".repeat(70_000)}\n`));
    return h;
  });
  try {
    const e = await agent.openStdio("c", "", "stdout").then(
      () => assert.fail("opened"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof TtrpcError);
    assert.equal(e.code, Code.INTERNAL);
    assert.match(e.message, /malformed answer/);
  } finally {
    agent.close();
  }
});
