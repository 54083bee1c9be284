// Host side of the agent's stdio port: one connection per stream, a header line, the agent's
// `ok` (or `error <code> <message>`), then raw bytes. See proto/agent/v1/agent.proto.
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { printable } from "../../common/text.ts";
import { formatStdioHeader, type StdioStream } from "../../proto/agent.ts";
import { Code, TtrpcError } from "../../ttrpc/index.ts";

/** The longest answer line accepted from the agent. */
const MAX_ANSWER = 1024;

export type { StdioStream };

export function stdioHeader(containerId: string, execId: string, stream: StdioStream): string {
  return formatStdioHeader({ containerId, execId, stream });
}

/** Sends the header on `conn` and resolves once the agent accepted it (bytes after `ok\n` stay readable). */
export function handshake(
  conn: Duplex,
  containerId: string,
  execId: string,
  stream: StdioStream,
  timeoutMs = 10_000,
): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    // Paused-mode reads ('readable' + read()), so that once the listener is gone the stream is back
    // to its initial state: the caller's first 'data' listener or pipe() starts the flow, and
    // nothing after the `ok` line is lost.
    let buf = Buffer.alloc(0);
    const timer = setTimeout(
      () => fail(new TtrpcError(Code.DEADLINE_EXCEEDED, "stdio handshake timed out")),
      timeoutMs,
    );
    const cleanup = () => {
      clearTimeout(timer);
      conn.off("readable", onReadable);
      conn.off("end", onEnd);
      conn.off("error", fail);
    };
    const fail = (e: Error) => {
      cleanup();
      conn.destroy();
      reject(e);
    };
    const onReadable = () => {
      for (let d = conn.read() as Buffer | null; d !== null; d = conn.read() as Buffer | null) {
        buf = Buffer.concat([buf, d]);
        const nl = buf.indexOf(10);
        // Bounded whether or not the line ended in this read: the agent's answer is one short line.
        if ((nl < 0 ? buf.length : nl) > MAX_ANSWER) {
          fail(new TtrpcError(Code.INTERNAL, "stdio: malformed answer from the agent"));
          return;
        }
        if (nl < 0) continue;
        cleanup();
        const line = buf.subarray(0, nl).toString();
        const rest = buf.subarray(nl + 1);
        if (rest.length) conn.unshift(rest);
        if (line === "ok") {
          resolve(conn);
          return;
        }
        const m = /^error (\d{1,2}) (.*)$/.exec(line);
        conn.destroy();
        const code = m ? Number(m[1]) : Code.INTERNAL;
        reject(
          new TtrpcError(
            code >= Code.CANCELLED && code <= Code.UNAUTHENTICATED ? code : Code.UNKNOWN,
            printable(m ? m[2]! : `stdio: unexpected answer "${line}"`, MAX_ANSWER),
          ),
        );
        return;
      }
    };
    const onEnd = () => fail(new TtrpcError(Code.UNAVAILABLE, "stdio: agent closed the connection"));
    conn.on("readable", onReadable);
    conn.once("end", onEnd);
    conn.once("error", fail);
    (conn as Socket).setNoDelay?.(true);
    conn.write(stdioHeader(containerId, execId, stream));
  });
}
