// ProcessIo: containerd's FIFOs (opened by src/shim/stdio.ts) joined to the agent's stdio streams.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Duplex, duplexPair } from "node:stream";
import { test } from "node:test";
import { pino } from "pino";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { ProcessIo } from "../../../src/sandbox/io.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const log = pino({ level: "silent" });
const openFds = () => readdirSync("/proc/self/fd").length;

function fifo(path: string): string {
  assert.equal(spawnSync("mkfifo", [path]).status, 0);
  return path;
}

/** Agent-side ends of the streams ProcessIo opens, by stream name. */
function fakeAgent() {
  const ours = new Map<string, Duplex>();
  const open = async (stream: string) => {
    const [a, b] = duplexPair();
    ours.set(stream, b);
    return a;
  };
  return { ours, open };
}

async function readSome(fd: number, want: string): Promise<string> {
  const buf = Buffer.alloc(64);
  let got = "";
  for (let i = 0; i < 200 && got.length < want.length; i++) {
    try {
      got += buf.subarray(0, readSync(fd, buf)).toString();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return got;
}

test("output reaches containerd's FIFOs, stdin reaches the agent with EOF after CloseIO", async () => {
  const d = mkdtempSync(join(tmpdir(), "cove-io-"));
  const client: number[] = [];
  try {
    const stdin = fifo(join(d, "in"));
    const stdout = fifo(join(d, "out"));
    const stderr = fifo(join(d, "err"));
    client.push(openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK));
    client.push(openSync(stderr, constants.O_RDONLY | constants.O_NONBLOCK));
    const io = new ProcessIo({ stdin, stdout, stderr, terminal: false }, log);
    assert.deepEqual(io.want, { stdin: true, stdout: true, stderr: true });
    const agent = fakeAgent();
    await io.attach(agent.open);
    assert.deepEqual([...agent.ours.keys()], ["stdout", "stderr", "stdin"]);
    agent.ours.get("stdout")!.end("out\n");
    agent.ours.get("stderr")!.end("err\n");
    await io.outputDone();
    assert.equal(await readSome(client[0]!, "out\n"), "out\n");
    assert.equal(await readSome(client[1]!, "err\n"), "err\n");

    const w = openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK);
    writeSync(w, "in\n");
    closeSync(w); // the client's writer is gone, but our hold keeps the FIFO from EOF
    const fromHost = agent.ours.get("stdin")!;
    const chunks: Buffer[] = [];
    fromHost.on("data", (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((r) => fromHost.once("end", () => r()));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(Buffer.concat(chunks).toString(), "in\n");
    io.closeStdin();
    await ended;
    io.close();
  } finally {
    for (const fd of client) closeSync(fd);
    rmSync(d, { recursive: true, force: true });
  }
});

test("a missing FIFO: FAILED_PRECONDITION, no agent stream opened, no fd left", async () => {
  const d = mkdtempSync(join(tmpdir(), "cove-io-"));
  try {
    const stdout = fifo(join(d, "out"));
    const before = openFds();
    const io = new ProcessIo({ stdin: join(d, "nope-in"), stdout, stderr: "", terminal: false }, log);
    const agent = fakeAgent();
    await assert.rejects(
      io.attach(agent.open),
      (e: unknown) => grpcStatus(e).code === Code.FAILED_PRECONDITION && /nope-in: ENOENT/.test(String(e)),
    );
    assert.equal(agent.ours.size, 0);
    assert.equal(openFds(), before);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
