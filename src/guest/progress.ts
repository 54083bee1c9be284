// Build progress: stage lines always (stderr), and one live-updating line on a TTY.

export interface Progress {
  /** A stage line, e.g. "kernel: compiling". Always printed. */
  stage(text: string): void;
  /** A transient status (overwritten in place on a TTY; dropped otherwise). */
  status(text: string): void;
  /** Clears the transient status line. */
  done(): void;
}

export function consoleProgress(out: NodeJS.WriteStream = process.stderr): Progress {
  const tty = Boolean(out.isTTY);
  let live = false;
  const clear = () => {
    if (live) out.write("\r\x1b[K");
    live = false;
  };
  return {
    stage(text) {
      clear();
      out.write(`==> ${text}\n`);
    },
    status(text) {
      if (!tty) return;
      const cols = out.columns || 100;
      out.write(`\r\x1b[K    ${text.slice(0, cols - 5)}`);
      live = true;
    },
    done: clear,
  };
}

/** A progress sink that records stages (tests) or discards everything. */
export function silentProgress(stages: string[] = []): Progress {
  return { stage: (t) => stages.push(t), status: () => {}, done: () => {} };
}
