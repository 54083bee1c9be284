// Host memory of a pod's processes, read from /proc without blocking the event loop: every read is
// async (the kernel's page-table walk for smaps runs on libuv's thread pool), bounded in size and
// time, and a scrape reuses a sample younger than MEMORY_SAMPLE_MS so that a scraper polling fast
// does not make the shim walk a multi-GiB guest's page tables over and over.
import { open } from "node:fs/promises";

/** The most /proc text read per file (a Node process has a few hundred mappings: ~0.5 MiB of smaps). */
export const MAX_PROC_TEXT = 16 * 1024 * 1024;
export const PROC_READ_TIMEOUT_MS = 2000;
/** A memory sample is reused for this long. */
export const MEMORY_SAMPLE_MS = 5000;

/** Reads a /proc file (its size reads as 0, so in chunks) up to maxBytes, giving up after timeoutMs. */
export async function readProcText(
  path: string,
  maxBytes = MAX_PROC_TEXT,
  timeoutMs = PROC_READ_TIMEOUT_MS,
): Promise<string> {
  const f = await open(path, "r");
  const deadline = performance.now() + timeoutMs;
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      if (performance.now() > deadline) throw new Error(`${path}: read took over ${timeoutMs} ms`);
      const b = Buffer.allocUnsafe(Math.min(256 * 1024, maxBytes - total));
      if (b.length === 0) throw new Error(`${path}: over ${maxBytes} bytes`);
      const { bytesRead } = await f.read(b, 0, b.length, null);
      if (bytesRead === 0) break;
      chunks.push(b.subarray(0, bytesRead));
      total += bytesRead;
    }
    return Buffer.concat(chunks, total).toString("latin1");
  } finally {
    await f.close();
  }
}

/** Pss of smaps_rollup, in bytes. */
export function parseRollupPss(text: string): number | undefined {
  const m = /^Pss:\s+(\d+) kB$/m.exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** Summed Rss (bytes) of the smaps mappings the predicate picks: the guest RAM a process has touched. */
export function parseSmapsRss(text: string, pick: (start: bigint, end: bigint) => boolean): number {
  let rss = 0;
  let inPicked = false;
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) {
      inPicked = pick(BigInt(`0x${m[1]}`), BigInt(`0x${m[2]}`));
      continue;
    }
    if (!inPicked) continue;
    const r = /^Rss:\s+(\d+) kB/.exec(line);
    if (r) rss += Number(r[1]) * 1024;
  }
  return rss;
}

export async function pssBytes(pid: number, proc = "/proc"): Promise<number | undefined> {
  try {
    return parseRollupPss(await readProcText(`${proc}/${pid}/smaps_rollup`, 64 * 1024));
  } catch {
    return undefined;
  }
}

export async function guestRamTouchedBytes(
  pid: number,
  isGuestRam: (start: bigint, end: bigint) => boolean,
  proc = "/proc",
): Promise<number | undefined> {
  try {
    return parseSmapsRss(await readProcText(`${proc}/${pid}/smaps`), isGuestRam);
  } catch {
    return undefined;
  }
}

export interface MemorySample {
  /** Guest RAM the guest has touched (resident in the VMM's mapping of it). */
  guestTouchedBytes?: number;
  /** PSS of the shim process (on the embedded backend: VMM and guest RAM included). */
  shimPssBytes?: number;
  /** PSS of a separate VMM process (QEMU), guest RAM included. */
  vmmPssBytes?: number;
}

/** One sample at a time, reused for maxAgeMs: concurrent scrapes share one read of /proc. */
export class CachedSampler<T> {
  private last: { at: number; value: T } | undefined;
  private pending: Promise<T> | undefined;

  constructor(
    private readonly sample: () => Promise<T>,
    private readonly maxAgeMs = MEMORY_SAMPLE_MS,
    private readonly now = () => performance.now(),
  ) {}

  get(): Promise<T> {
    if (this.last && this.now() - this.last.at < this.maxAgeMs) return Promise.resolve(this.last.value);
    this.pending ??= this.sample()
      .then((value) => {
        this.last = { at: this.now(), value };
        return value;
      })
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }
}
