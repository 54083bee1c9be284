// ttrpc responses from the agent as the shim sees them: the shim's AgentClient makes calls over an
// in-memory connection, and the "agent" on the other end answers each request with something built
// from the protocol: a well-formed response of the method's type (random fields), one whose bytes
// were broken, an error status with any code and a message full of escapes, a response on a stream
// id nobody asked for, twice, as a data or request frame, a frame larger than the limit, garbage,
// bytes split across writes, the connection cut mid-frame, or nothing at all.
// Invariants on every case: every call settles (at the latest when the client closes), an error
// has a gRPC code from the table and a bounded message without control characters, a result has
// the shape its method promises, and the client holds no call after it settled them all.

import { AGENT_SERVICE, AgentClient, MAX_AGENT_ERROR } from "../../src/sandbox/agent/index.ts";
import { lookupService } from "../../src/ttrpc/codec.ts";
import { decodeRequest, encodeResponseFrame } from "../../src/ttrpc/envelope.ts";
import { encodeFrame, FrameDecoder, HEADER_LENGTH, MessageType, writeHeader } from "../../src/ttrpc/frame.ts";
import { Code, TtrpcError } from "../../src/ttrpc/index.ts";
import { duplexPair } from "../unit/ttrpc/pair.ts";
import { type CaseContext, type Fuzzer, type Recorder, type Rng, runCases } from "./fuzz.ts";
import { mutate, randomEncoded, randomString } from "./protobuf.ts";

const MAX_CALLS = 6;
// biome-ignore lint/suspicious/noControlCharactersInRegex: what must not reach containerd.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

type Check = (v: unknown) => string | undefined;
const isPid: Check = (v) =>
  Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff ? undefined : `pid ${v}`;
const isObject: Check = (v) =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? undefined : `not an object: ${v}`;
const isArray: Check = (v) => (Array.isArray(v) ? undefined : `not a list: ${v}`);
const isString: Check = (v) => (typeof v === "string" ? undefined : `not a string: ${v}`);
const none: Check = (v) => (v === undefined ? undefined : `unexpected result ${v}`);

/** Each client method, the ttrpc method it calls, and what its result must look like. */
const CALLS: Array<[string, (a: AgentClient) => Promise<unknown>, Check]> = [
  ["Check", (a) => a.check(), isObject],
  ["CreateSandbox", (a) => a.createSandbox({}), none],
  ["DestroySandbox", (a) => a.destroySandbox(), none],
  ["CreateContainer", (a) => a.createContainer({ container_id: "c", spec: {}, rootfs: {} }), isPid],
  ["SyncFiles", (a) => a.syncFiles({ storage_id: "s", entries: [] }), none],
  ["StartContainer", (a) => a.startContainer("c"), isPid],
  ["ExecProcess", (a) => a.execProcess({ container_id: "c", exec_id: "e", process: {} }), isPid],
  ["SignalProcess", (a) => a.signalProcess("c", "", 15), none],
  ["WaitProcess", (a) => a.waitProcess("c", ""), isObject],
  ["DeleteProcess", (a) => a.deleteProcess("c", "e"), isObject],
  ["RemoveContainer", (a) => a.removeContainer("c", true), none],
  ["StateContainer", (a) => a.stateContainer("c"), isObject],
  ["ListPids", (a) => a.listPids("c"), isArray],
  ["StatsContainer", (a) => a.statsContainer("c"), isObject],
  ["ResizeTty", (a) => a.resizeTty({ containerId: "c", execId: "", rows: 24, cols: 80 }), none],
  ["CloseStdin", (a) => a.closeStdin("c"), none],
  ["GetOOMEvent", (a) => a.getOomEvent(), isString],
  ["ConfigureNetwork", (a) => a.configureNetwork({ interfaces: [] }), isArray],
];

const ACTIONS = {
  ok: 30,
  brokenPayload: 10,
  status: 20,
  wrongId: 6,
  twice: 5,
  wrongType: 5,
  oversize: 2,
  garbage: 3,
  silent: 8,
  cutMidFrame: 2,
};

const CODES = [0, 1, 2, 4, 5, 13, 14, 16, 17, 999, -1, 2 ** 31 - 1, -(2 ** 31)];

function statusMessage(rng: Rng): string {
  if (rng.chance(0.1)) return `\x1b]0;owned\x07${"\x1b[2J".repeat(rng.range(1, 20000))}`;
  return randomString(rng, 64);
}

/** What the agent writes for one request (stream id `id` of method `method`). */
function answer(rng: Rng, rec: Recorder, id: number, method: string): Uint8Array[] {
  const action = rng.weighted(ACTIONS);
  rec.op(action);
  const type = lookupService(AGENT_SERVICE).methods[method]!.resolvedResponseType!;
  const payload = () => (rng.chance(0.3) ? new Uint8Array(0) : randomEncoded(rng, type));
  switch (action) {
    case "ok":
      return [encodeResponseFrame(id, undefined, payload())];
    case "brokenPayload":
      return [encodeResponseFrame(id, undefined, mutate(rng, randomEncoded(rng, type)))];
    case "status":
      return [encodeResponseFrame(id, { code: rng.pick(CODES), message: statusMessage(rng) }, new Uint8Array(0))];
    case "wrongId":
      return [encodeResponseFrame(rng.pick([0, 2, id + 2, 0xffffffff, rng.u32()]), undefined, payload())];
    case "twice":
      return [encodeResponseFrame(id, undefined, payload()), encodeResponseFrame(id, undefined, payload())];
    case "wrongType": {
      const f = encodeResponseFrame(id, undefined, payload());
      f[8] = rng.pick([MessageType.REQUEST, MessageType.DATA, 0, 0xff]);
      return [f];
    }
    case "oversize": {
      const h = Buffer.alloc(HEADER_LENGTH);
      writeHeader(h, rng.pick([(4 << 20) + 1, 0xffffffff]), id, MessageType.RESPONSE, 0);
      return [h, rng.bytes(rng.int(64))];
    }
    case "garbage":
      return [
        rng.chance(0.5)
          ? rng.bytes(rng.range(1, 40))
          : encodeFrame(id, MessageType.RESPONSE, 0, rng.bytes(rng.int(40))),
      ];
    case "cutMidFrame": {
      const f = encodeResponseFrame(id, undefined, randomEncoded(rng, type));
      return [f.subarray(0, rng.int(f.length)), new Uint8Array(0)]; // the empty chunk: close after it
    }
    default:
      return [];
  }
}

function checkError(e: unknown): string | undefined {
  if (!(e instanceof TtrpcError)) return `rejected with ${e instanceof Error ? e.name : typeof e}: ${e}`;
  if (!Number.isInteger(e.code) || e.code < Code.CANCELLED || e.code > Code.UNAUTHENTICATED)
    return `error code ${e.code} is not a gRPC code`;
  if (e.message.length > MAX_AGENT_ERROR) return `error message of ${e.message.length} characters`;
  if (CONTROL.test(e.message)) return `control character in ${JSON.stringify(e.message.slice(0, 60))}`;
  return undefined;
}

async function oneCase({ rng, rec }: CaseContext): Promise<void> {
  const [host, guest] = duplexPair();
  guest.on("error", () => {});
  const agent = await AgentClient.connect(async (ch) => {
    if (ch === "rpc") return host;
    throw new Error("no stdio in this fuzzer");
  });
  const requests: Array<{ id: number; method: string }> = [];
  const decoder = new FrameDecoder({
    frame: (h, p) => {
      if (h.type === MessageType.REQUEST)
        requests.push({ id: h.streamId, method: decodeRequest(Uint8Array.from(p)).method });
    },
    oversize: () => {},
  });
  guest.on("data", (c: Buffer) => decoder.push(c));

  const n = rng.range(1, MAX_CALLS);
  let open = n;
  const done: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const [name, call, check] = rng.pick(CALLS);
    rec.op(`call:${name}`);
    done.push(
      call(agent).then(
        (v) => {
          open--;
          rec.state("resolved");
          const bad = check(v);
          if (bad) rec.violate(`${name} resolved badly: ${bad}`);
        },
        (e: unknown) => {
          open--;
          rec.state(`rejected:${e instanceof TtrpcError ? e.code : "other"}`);
          const bad = checkError(e);
          if (bad) rec.violate(`${name}: ${bad}`);
        },
      ),
    );
  }
  await new Promise<void>((r) => setImmediate(r));
  rec.bounded("callsInFlight", agent.rpc.inFlight, MAX_CALLS);

  // Answer in any order; some answers arrive in pieces over several turns.
  const order = requests.slice().sort(() => rng.next() - 0.5);
  let cut = false;
  for (const req of order) {
    for (const chunk of answer(rng, rec, req.id, req.method)) {
      if (chunk.length === 0) {
        cut = true;
        break;
      }
      if (rng.chance(0.2) && chunk.length > 1) {
        const at = rng.range(1, chunk.length - 1);
        guest.write(chunk.subarray(0, at));
        await new Promise<void>((r) => setImmediate(r));
        guest.write(chunk.subarray(at));
      } else guest.write(chunk);
    }
    if (cut) {
      rec.state("cut");
      guest.destroy();
      break;
    }
  }
  await new Promise<void>((r) => setImmediate(r));
  rec.bounded("callsInFlight", agent.rpc.inFlight, MAX_CALLS);
  // Teardown: whatever is still waiting (silent agent, long polls) must settle now.
  agent.close();
  guest.destroy();
  for (let i = 0; i < 3 && open > 0; i++) await new Promise<void>((r) => setImmediate(r));
  if (open > 0) rec.violate(`${open} call(s) never settled after close`);
  rec.bounded("callsAfterClose", agent.rpc.inFlight, 0);
  await Promise.race([Promise.all(done), Promise.resolve()]);
}

export const fuzzer: Fuzzer = {
  name: "agent-responses",
  run: (opts) => runCases("agent-responses", opts, oneCase),
};
