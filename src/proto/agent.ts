// The guest agent protocol's facts beyond its messages (proto/agent/v1/agent.proto): one module that
// both sides import, the shim's client (src/sandbox/agent) and the agent in the guest (agent/src).
import type { cove, ServiceHandlers } from "./services.ts";

export const AGENT_SERVICE = "cove.agent.v1.Agent";
export type AgentServiceName = typeof AGENT_SERVICE;
/** The agent's handlers, one per RPC of the .proto. */
export type AgentHandlers = ServiceHandlers<AgentServiceName>;

/** In the guest the agent listens on vsock: ttrpc on one port, stdio connections on the next. */
export const AGENT_VSOCK_PORT = 1024;
export const STDIO_VSOCK_PORT = 1025;

// ---- the stdio port --------------------------------------------------------------------------
// One connection per stream. The host writes one header line
//   cove-stdio 1 <container_id> <exec_id|-> <stdin|stdout|stderr>\n
// and the agent answers `ok\n` (then raw bytes) or `error <code> <message>\n` and closes.

export const STDIO_MAGIC = "cove-stdio";
export const STDIO_VERSION = "1";
export const STDIO_STREAMS = ["stdin", "stdout", "stderr"] as const;
export type StdioStream = (typeof STDIO_STREAMS)[number];

export interface StdioHeader {
  containerId: string;
  /** "" for the container's init process ("-" on the wire). */
  execId: string;
  stream: StdioStream;
}

export function formatStdioHeader(h: StdioHeader): string {
  return `${STDIO_MAGIC} ${STDIO_VERSION} ${h.containerId} ${h.execId || "-"} ${h.stream}\n`;
}

/**
 * Parses a header line (without the newline); throws with a reason. `checkId` checks each id as it
 * checks the ids of requests ("-", no exec id, is not passed to it).
 */
export function parseStdioHeader(line: string, checkId: (id: string, kind: string) => string): StdioHeader {
  const parts = line.split(" ");
  if (parts.length !== 5 || parts[0] !== STDIO_MAGIC) throw new Error("not a cove-stdio header");
  if (parts[1] !== STDIO_VERSION) throw new Error(`unsupported cove-stdio version ${parts[1]}`);
  const stream = parts[4] as StdioStream;
  if (!STDIO_STREAMS.includes(stream)) throw new Error(`unknown stream ${stream}`);
  const containerId = checkId(parts[2]!, "container_id");
  const execId = parts[3] === "-" ? "" : checkId(parts[3]!, "exec_id");
  return { containerId, execId, stream };
}

// ---- SyncFiles -------------------------------------------------------------------------------

/** FileEntry.Kind (the generated enum is a type only). */
export const FileKind = { FILE: 0, DIR: 1, SYMLINK: 2 } as const satisfies Record<
  keyof typeof cove.agent.v1.FileEntry.Kind,
  cove.agent.v1.FileEntry.Kind
>;

/**
 * One entry of a SyncFiles tree (what every entry names; data for a FILE, target for a SYMLINK). The
 * kind is any number: a proto3 enum is open, so the agent gets (and refuses) unknown kinds.
 */
export type FileEntry = Omit<cove.agent.v1.FileEntry.$Properties, "kind"> & {
  path: string;
  kind: number;
  mode: number;
  uid: number;
  gid: number;
};
/** A SyncFiles request (also CreateContainerRequest.files): a storage and the tree it gets. */
export type SyncFilesRequest = cove.agent.v1.SyncFilesRequest.$Properties & {
  storage_id: string;
  entries: FileEntry[];
};
