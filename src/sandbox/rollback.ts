// An undo list for a sequence of steps that each acquire something (the pod boot): every step that
// succeeded defers its undo; on a later failure the undos run in reverse order, each awaited, and
// one that fails is logged so that the rest still run and the caller sees the original error.
// (DisposableStack does this in newer Node; Node 20 has none.)
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";

export class Rollback {
  private readonly undos: Array<{ what: string; undo: () => unknown }> = [];

  /** Registers the undo of a step that has just succeeded. */
  defer(what: string, undo: () => unknown): void {
    this.undos.push({ what, undo });
  }

  /** What is held now, oldest first (for logs and tests). */
  get held(): string[] {
    return this.undos.map((u) => u.what);
  }

  /** Everything succeeded: the caller owns what the steps acquired. */
  dismiss(): void {
    this.undos.length = 0;
  }

  /** Undoes every step, newest first. Never throws. */
  async unwind(log: Logger): Promise<void> {
    for (let u = this.undos.pop(); u; u = this.undos.pop()) {
      try {
        await u.undo();
      } catch (e) {
        log.warn({ undo: u.what, err: errorMessage(e) }, "rollback: an undo failed (the others still run)");
      }
    }
  }
}
