// The stdio port: one connection per stream, opened with a header line (src/proto/agent.ts); the
// agent answers `ok\n` (then raw bytes) or `error <code> <message>\n` (then the connection closes).
import type { Socket } from "node:net";
import { errorMessage } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { parseStdioHeader as parseHeader, type StdioHeader } from "../../../src/proto/agent.ts";
import type { Agent } from "../agent.ts";
import { checkId } from "../api/errors.ts";
import type { Logger } from "../log.ts";

const MAX_HEADER = 512;
const HEADER_TIMEOUT_MS = 10_000;

export type { StdioHeader };

/** Parses a header line (without the newline); throws with a reason. */
export function parseStdioHeader(line: string): StdioHeader {
  // The ids name a container and a process; as in every request, they must be valid ids.
  return parseHeader(line, (id, kind) => checkId(id, kind));
}

/** Handles one connection on the stdio port. */
export function serveStdio(agent: Agent, conn: Socket, log: Logger): void {
  conn.on("error", () => {});
  let buf: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => conn.destroy(), HEADER_TIMEOUT_MS);
  // Paused-mode reads, so that the pumps' own listeners start the flow afterwards (see pump.ts).
  const onReadable = () => {
    for (let d = conn.read() as Buffer | null; d !== null; d = conn.read() as Buffer | null) {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      const nl = buf.indexOf(10);
      if (nl < 0) {
        if (buf.length > MAX_HEADER) return refuse(3, "header too long");
        continue;
      }
      clearTimeout(timer);
      conn.off("readable", onReadable);
      const rest = buf.subarray(nl + 1);
      if (rest.length) conn.unshift(rest);
      let h: StdioHeader;
      try {
        h = parseStdioHeader(buf.subarray(0, nl).toString("utf8"));
      } catch (e) {
        return refuse(3, errorMessage(e));
      }
      try {
        // Attaching only starts pumps (their bytes come on later ticks), so `ok` still goes first.
        agent.attachStdio(h.containerId, h.execId, h.stream, conn);
        conn.write("ok\n");
        log.debug(h, "stdio attached");
      } catch (e) {
        const s = grpcStatus(e); // the stdio port is a service edge too
        log.debug({ ...h, err: s.message }, "stdio refused");
        refuse(s.code, s.message);
      }
      return;
    }
  };
  const refuse = (code: number, msg: string) => {
    clearTimeout(timer);
    conn.off("readable", onReadable);
    conn.end(`error ${code} ${msg.replace(/\n/g, " ")}\n`);
  };
  conn.on("readable", onReadable);
}
