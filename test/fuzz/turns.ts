// Counts the descriptor chains a device takes from a queue in one synchronous turn: a run of
// JavaScript that the event loop cannot interrupt (a kick's callback, a setImmediate). The first
// pop of a run queues a microtask, which runs when the run's stack has unwound; it records the
// count. A device that loops until its ring is empty, instead of taking a batch and yielding,
// shows up here as a count above its documented batch — a count, never a wall time.
import type { Queue } from "../../src/virtio/queue/queue.ts";
import type { Recorder } from "./fuzz.ts";

export function countPopsPerTurn(q: Queue, rec: Recorder, name: string, bound: number): void {
  const pop = q.pop.bind(q);
  let n = 0;
  q.pop = () => {
    const c = pop();
    if (c) {
      if (n === 0) {
        queueMicrotask(() => {
          rec.bounded(name, n, bound);
          n = 0;
        });
      }
      n++;
    }
    return c;
  };
}
