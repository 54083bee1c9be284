// The shim's ends of a process's stdio as containerd's clients hand them over: FIFO paths (ctr, CRI),
// or file:// URIs. Opened as runc's shim opens them: stdout/stderr O_WRONLY, each with an O_RDONLY fd
// kept alongside so a write never fails with EPIPE while the client's reader is away; stdin
// O_RDONLY|O_NONBLOCK, with a writer of our own held on a FIFO so that a client that has not opened
// its end yet is not mistaken for EOF (CloseIO drops it). Everything is non-blocking: the sandbox
// wraps the fds in streams (src/sandbox/io.ts).
import { closeSync, constants, fstatSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { errorMessage, InvalidArgumentError, NotSupportedError, WrongStateError } from "../common/errors.ts";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface OpenedStdio {
  stdin?: number;
  stdout?: number;
  stderr?: number;
  /** Read ends held open so writers never see EPIPE. */
  readonly keep: number[];
  /** Our own writer on a stdin FIFO: EOF comes only once it is closed (and the client's too). */
  stdinHold?: number;
  /** Closes every fd opened here (for an owner that did not hand them on). */
  close(): void;
}

type Target = { kind: "fifo"; path: string } | { kind: "file"; path: string };

/** Parses a stdio address: a bare path or fifo:// is a FIFO, file:// a file; binary:// is refused. */
export function parseStdioUri(uri: string): Target {
  const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(uri);
  if (!m) return { kind: "fifo", path: uri };
  const scheme = m[1]!.toLowerCase();
  const rest = decodeURIComponent(m[2]!.split("?")[0]!);
  if (scheme === "fifo") return { kind: "fifo", path: rest };
  if (scheme === "file") return { kind: "file", path: rest };
  if (scheme === "binary") {
    throw new NotSupportedError(`stdio ${uri}: logging binaries (binary://) are not supported by cove`);
  }
  throw new InvalidArgumentError(`stdio ${uri}: unknown scheme ${scheme}`);
}

function openFailed(what: string, path: string, e: unknown): WrongStateError {
  const code = (e as NodeJS.ErrnoException).code ?? errorMessage(e);
  return new WrongStateError(`cannot open ${what} ${path}: ${code}`);
}

export function openStdio(p: StdioPaths): OpenedStdio {
  const fds: number[] = [];
  const keep: number[] = [];
  const track = (fd: number) => {
    fds.push(fd);
    return fd;
  };
  const out: OpenedStdio = {
    keep,
    close() {
      for (const fd of fds.splice(0)) {
        try {
          closeSync(fd);
        } catch {
          // already closed by a stream that owned it
        }
      }
    },
  };
  const openOutput = (what: string, uri: string): number => {
    const t = parseStdioUri(uri);
    try {
      if (t.kind === "file") {
        mkdirSync(dirname(t.path), { recursive: true });
        return track(openSync(t.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o644));
      }
      // The read end first: opening it non-blocking always succeeds, and then the write end opens
      // at once even if the client has not opened its reader yet.
      keep.push(track(openSync(t.path, constants.O_RDONLY | constants.O_NONBLOCK)));
      return track(openSync(t.path, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch (e) {
      throw openFailed(what, t.path, e);
    }
  };
  try {
    if (p.stdin) {
      const t = parseStdioUri(p.stdin);
      try {
        out.stdin = track(openSync(t.path, constants.O_RDONLY | constants.O_NONBLOCK));
        if (fstatSync(out.stdin).isFIFO())
          out.stdinHold = track(openSync(t.path, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch (e) {
        throw openFailed("stdin", t.path, e);
      }
    }
    if (p.stdout) out.stdout = openOutput("stdout", p.stdout);
    // With a terminal, stdout and stderr are one stream (ctr sends no stderr then).
    if (p.stderr && !p.terminal) out.stderr = openOutput("stderr", p.stderr);
  } catch (e) {
    out.close();
    throw e;
  }
  return out;
}
