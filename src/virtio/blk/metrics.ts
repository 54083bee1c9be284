/** Per-device counters (Firecracker-style): cheap to bump, read by tests, benchmarks and stats. */
export class BlkMetrics {
  reads = 0;
  writes = 0;
  flushes = 0;
  discards = 0;
  writeZeroes = 0;
  getIds = 0;
  bytesRead = 0;
  bytesWritten = 0;
  ioErrors = 0;
  unsupported = 0;
  /** Requests that broke the spec (the queue is then marked broken). */
  invalid = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** Most requests taken off one queue in one event-loop turn (at most BLK_BATCH). */
  maxBatch = 0;
  /** Turns that ended with requests left in the ring for the next turn (the batch ran out). */
  deferredTurns = 0;
  configChanges = 0;
  /** Requests returned to the guest, and the summed time from taking each off the ring to returning it. */
  completed = 0;
  serviceNs = 0;
}
