// The handshake lines on the shim's byte streams, each side driven by a peer that knows the format:
//  - stdio, host side (AgentClient.openStdio): the agent answers the header with `ok`, `error <code>
//    <message>`, something else, a line too long, nothing and the end, in pieces, with bytes after;
//  - stdio, agent side (serveStdio): the host sends header lines, well-formed or not, in pieces;
//  - hybrid vsock (HybridVsock): a client sends `CONNECT <port>` lines, well-formed or not.
// Invariants: no uncaught error; the host gets a stream only for `ok`, with exactly the bytes that
// followed it, and otherwise an error with a gRPC code and a bounded message without control
// characters; the agent answers exactly one line, `ok` or `error <code> <message>`, and attaches
// only what a well-formed header named; the hybrid socket connects only the port a well-formed
// line named, forwards exactly the bytes after it, and closes on anything else.
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import pino from "pino";
import type { Agent } from "../../agent/src/agent.ts";
import { ID_RE } from "../../agent/src/api/errors.ts";
import { serveStdio } from "../../agent/src/stdio/server.ts";
import { AgentClient, MAX_AGENT_ERROR, stdioHeader } from "../../src/sandbox/agent/index.ts";
import { Code, TtrpcError } from "../../src/ttrpc/index.ts";
import type { VsockDevice } from "../../src/virtio/vsock/device.ts";
import { HybridVsock } from "../../src/virtio/vsock/hybrid.ts";
import { duplexPair } from "../unit/ttrpc/pair.ts";
import { type CaseContext, type Fuzzer, type Recorder, type Rng, runCases } from "./fuzz.ts";
import { randomString } from "./protobuf.ts";

// biome-ignore lint/suspicious/noControlCharactersInRegex: what must not reach containerd.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
const STREAMS = ["stdin", "stdout", "stderr"] as const;
const turn = () => new Promise<void>((r) => setImmediate(r));

/** Writes `data` in 1–3 pieces, a turn apart. */
async function writePieces(rng: Rng, to: Duplex, data: Buffer): Promise<void> {
  let at = 0;
  for (let k = rng.range(1, 3); k > 0 && at < data.length; k--) {
    const end = k === 1 ? data.length : rng.range(at, data.length);
    to.write(data.subarray(at, end));
    at = end;
    await turn();
  }
  if (at < data.length) to.write(data.subarray(at));
}

/** Collects what a stream yields until it ends or closes. */
function collect(s: Duplex): { bytes: () => Buffer; ended: () => boolean } {
  const parts: Buffer[] = [];
  let ended = false;
  s.on("data", (d: Buffer) => parts.push(d));
  s.on("end", () => (ended = true));
  s.on("close", () => (ended = true));
  s.on("error", () => (ended = true));
  return { bytes: () => Buffer.concat(parts), ended: () => ended };
}

// --- stdio, host side --------------------------------------------------------------------------

async function stdioHost(rng: Rng, rec: Recorder): Promise<void> {
  const [host, guest] = duplexPair();
  guest.on("error", () => {});
  const [rpcHost] = duplexPair();
  const agent = await AgentClient.connect(async (ch) => (ch === "rpc" ? rpcHost : host));
  const kind = rng.weighted({ ok: 4, error: 4, other: 2, long: 1, end: 1 });
  rec.op(`host:${kind}`);
  const after = rng.chance(0.5) ? rng.bytes(rng.range(1, 64)) : Buffer.alloc(0);
  let answer: Buffer;
  switch (kind) {
    case "ok":
      answer = Buffer.concat([Buffer.from("ok\n"), after]);
      break;
    case "error": {
      const code = rng.pick(["5", "0", "17", "999999999999999999999", "-1", "x", ""]);
      const msg = rng.chance(0.1) ? "\x1b[2J".repeat(rng.range(100, 3000)) : randomString(rng, 80);
      answer = Buffer.from(`error ${code} ${msg.replace(/\n/g, " ")}\n`);
      break;
    }
    case "other":
      answer = Buffer.from(`${randomString(rng, 40).replace(/\n/g, "")}\n`);
      break;
    case "long":
      answer = Buffer.concat([Buffer.from("error 2 "), Buffer.alloc(rng.range(900, 70_000), 0x1b), Buffer.from("\n")]);
      break;
    default:
      answer = rng.bytes(rng.int(20)).filter((b) => b !== 10) as Buffer;
  }
  const got = agent.openStdio("c1", rng.chance(0.5) ? "" : "e1", rng.pick(STREAMS)).then(
    (s) => ({ s }),
    (e: unknown) => ({ e }),
  );
  // The header must arrive whole and first.
  await turn();
  const header = guest.read() as Buffer | null;
  if (!header?.toString().startsWith("cove-stdio 1 c1 ")) rec.violate(`header ${header?.toString()}`);
  await writePieces(rng, guest, answer);
  if (kind === "end") guest.end();
  await turn();
  const r = await Promise.race([got, turn().then(() => undefined)]);
  if (r === undefined) {
    // Still waiting (no line yet): only a case that never finished its line may do that.
    if (kind !== "end" && kind !== "long") rec.violate(`${kind}: no answer after the line`);
    agent.close();
    guest.destroy();
    await got;
    rec.state("waiting");
    return;
  }
  if ("s" in r) {
    rec.state("stream");
    if (kind !== "ok") rec.violate(`${kind} answer gave a stream`);
    const c = collect(r.s);
    guest.end();
    await turn();
    await turn();
    if (!c.bytes().equals(after)) rec.violate(`after ok: got ${c.bytes().length} bytes, sent ${after.length}`);
  } else {
    rec.state("refused");
    const e = r.e;
    if (kind === "ok") rec.violate(`ok answer refused: ${(e as Error).message}`);
    if (!(e instanceof TtrpcError)) rec.violate(`refused with ${String(e)}`);
    else {
      if (!Number.isInteger(e.code) || e.code < Code.CANCELLED || e.code > Code.UNAUTHENTICATED)
        rec.violate(`error code ${e.code}`);
      rec.bounded("hostErrorLength", e.message.length, MAX_AGENT_ERROR);
      if (CONTROL.test(e.message)) rec.violate(`control character in ${JSON.stringify(e.message.slice(0, 60))}`);
    }
  }
  agent.close();
  guest.destroy();
}

// --- stdio, agent side -------------------------------------------------------------------------

const silent = pino({ level: "silent" });

async function stdioAgent(rng: Rng, rec: Recorder): Promise<void> {
  const [host, guest] = duplexPair();
  host.on("error", () => {});
  const attached: string[] = [];
  const refuseWith = rng.chance(0.3) ? new TtrpcError(rng.pick([5, 9, 13]), randomString(rng, 30)) : undefined;
  const agent = {
    attachStdio(id: string, execId: string, stream: string) {
      if (refuseWith) throw refuseWith;
      attached.push(`${id}/${execId}/${stream}`);
    },
  } as unknown as Agent;
  serveStdio(agent, guest as unknown as Socket, silent);
  const kind = rng.weighted({ good: 4, badMagic: 1, badVersion: 1, badStream: 1, fields: 1, long: 1, garbage: 1 });
  rec.op(`agent:${kind}`);
  const id = rng.chance(0.8) ? `c${rng.int(100)}` : randomString(rng, 12).replace(/[ \n]/g, "_");
  const exec = rng.chance(0.5) ? "" : `e${rng.int(10)}`;
  const stream = rng.pick(STREAMS);
  let line: string;
  switch (kind) {
    case "good":
      line = stdioHeader(id, exec, stream);
      break;
    case "badMagic":
      line = `cove-stdi0 1 ${id} - ${stream}\n`;
      break;
    case "badVersion":
      line = `cove-stdio ${rng.pick(["2", "0", "", "1 "])} ${id} - ${stream}\n`;
      break;
    case "badStream":
      line = `cove-stdio 1 ${id} - ${rng.pick(["stdout ", "STDIN", "", "constructor"])}\n`;
      break;
    case "fields":
      line = `cove-stdio 1 ${id}${rng.pick(["", " a b", "  "])} ${stream}\n`;
      break;
    case "long":
      line = `cove-stdio 1 ${"x".repeat(rng.range(500, 3000))}`;
      break;
    default:
      line = randomString(rng, 60);
  }
  const out = collect(host);
  const trailing = rng.chance(0.3) ? Buffer.from("stdin bytes") : Buffer.alloc(0);
  await writePieces(rng, host, Buffer.concat([Buffer.from(line), trailing]));
  await turn();
  await turn();
  const text = out.bytes().toString();
  const wellFormed = kind === "good" && ID_RE.test(id);
  if (text === "") {
    // No answer yet: only while the line is unfinished (the agent waits for the rest, bounded).
    if (line.includes("\n") && !(kind === "long" || line.length > 512))
      rec.violate(`no answer to ${JSON.stringify(line.slice(0, 40))}`);
    rec.state("agent:waiting");
  } else if (text === "ok\n") {
    rec.state("agent:ok");
    if (!wellFormed || refuseWith) rec.violate(`ok for ${JSON.stringify(line.slice(0, 60))}`);
    if (attached.length !== 1 || attached[0] !== `${id}/${exec}/${stream}`)
      rec.violate(`attached ${attached.join(",")}`);
  } else {
    rec.state("agent:error");
    if (!/^error \d+ [^\n]*\n$/.test(text)) rec.violate(`answer ${JSON.stringify(text.slice(0, 60))}`);
    if (attached.length > 0) rec.violate("attached and refused");
    if (wellFormed && !refuseWith) rec.violate(`refused a good header: ${text.slice(0, 60)}`);
  }
  rec.bounded("agentAnswerLines", text.split("\n").length - 1, 1);
  host.destroy();
}

// --- hybrid vsock ------------------------------------------------------------------------------

async function hybrid(rng: Rng, rec: Recorder): Promise<void> {
  const connects: number[] = [];
  let guestSide: Duplex | undefined;
  const device = {
    acceptor: undefined,
    connect(port: number) {
      connects.push(port);
      if (rng.chance(0.2)) return Promise.reject(new Error("refused"));
      const [h, g] = duplexPair();
      g.on("error", () => {});
      guestSide = g;
      return Promise.resolve(Object.assign(h, { localPort: 1234 }));
    },
  } as unknown as VsockDevice;
  const hv = new HybridVsock(device, "/nonexistent/hybrid.sock", { logger: silent as never });
  const [client, server] = duplexPair();
  client.on("error", () => {});
  (hv as unknown as { onClient(s: Duplex): void }).onClient(server);
  const kind = rng.weighted({ good: 4, lower: 1, bigPort: 1, noPort: 1, long: 1, garbage: 1 });
  rec.op(`hybrid:${kind}`);
  const port = rng.pick([0, 1, 1024, 0xffffffff, rng.u32()]);
  let line: string;
  switch (kind) {
    case "good":
      line = `CONNECT ${port}\n`;
      break;
    case "lower":
      line = `connect\t${port} \n`;
      break;
    case "bigPort":
      line = `CONNECT ${rng.pick(["4294967296", "99999999999", "-1", "1e3", "0x10"])}\n`;
      break;
    case "noPort":
      line = rng.pick(["CONNECT\n", "CONNECT \n", "\n", "OK 1\n"]);
      break;
    case "long":
      line = `CONNECT ${"1".repeat(rng.range(60, 200))}`;
      break;
    default:
      line = randomString(rng, 40);
  }
  const after = rng.chance(0.5) ? rng.bytes(rng.range(1, 32)) : Buffer.alloc(0);
  const out = collect(client);
  await writePieces(rng, client, Buffer.concat([Buffer.from(line, "latin1"), after]));
  await turn();
  await turn();
  const good = kind === "good" || kind === "lower";
  rec.bounded("hybridConnects", connects.length, 1);
  if (connects.length === 1) {
    rec.state("hybrid:connect");
    if (!good) rec.violate(`connected for ${JSON.stringify(line.slice(0, 40))}`);
    else if (connects[0] !== port) rec.violate(`connected port ${connects[0]}, asked ${port}`);
    if (guestSide) {
      rec.state("hybrid:spliced");
      const g = collect(guestSide);
      await turn();
      if (!out.bytes().toString().startsWith("OK 1234\n")) rec.violate(`answer ${out.bytes().toString().slice(0, 20)}`);
      if (!g.bytes().equals(after)) rec.violate(`forwarded ${g.bytes().length} bytes, sent ${after.length}`);
    }
  } else if (good) rec.violate(`no connect for ${JSON.stringify(line)}`);
  else if (line.includes("\n") || line.length > 64) {
    rec.state("hybrid:closed");
    if (!out.ended()) rec.violate(`a bad line left the socket open: ${JSON.stringify(line.slice(0, 40))}`);
  }
  client.destroy();
  await hv.close().catch(() => undefined);
}

async function oneCase({ rng, rec }: CaseContext): Promise<void> {
  const which = rng.weighted({ stdioHost: 2, stdioAgent: 2, hybrid: 2 });
  if (which === "stdioHost") await stdioHost(rng, rec);
  else if (which === "stdioAgent") await stdioAgent(rng, rec);
  else await hybrid(rng, rec);
}

export const fuzzer: Fuzzer = {
  name: "handshakes",
  run: (opts) => runCases("handshakes", opts, oneCase),
};
