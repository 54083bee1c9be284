// What a virtio-blk device reads and writes: a regular file or a block device, opened for
// asynchronous positional I/O (fs.promises FileHandle: the work runs on libuv's thread pool,
// never on the event loop).
import { constants, type FileHandle, open } from "node:fs/promises";
import {
  blockDeviceSize,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocateAsync,
  preadvNowait,
  pwritevNowait,
} from "../../native/blockio.ts";

/**
 * Requests up to this size first try RWF_NOWAIT on the event loop: a page-cache hit is a memcpy,
 * which costs less than the thread pool round trip (two thread hand-offs and a loop wake-up).
 * Larger ones go to the pool directly so one request never holds the loop for long, and
 * concurrent large requests copy in parallel on the pool threads.
 */
const NOWAIT_MAX = 256 * 1024;
/**
 * When the caller says nothing else is in flight (queue depth 1: nothing to overlap with), up to
 * this size goes inline too; a 1 MiB page-cache copy holds the loop for well under 0.1 ms.
 */
const NOWAIT_MAX_ALONE = 1024 * 1024;
/** IOV_MAX: the native call takes at most this many buffers. */
const NOWAIT_MAX_BUFS = 1024;
/** Stop trying non-blocking writes after this many refusals in a row (filesystem without support). */
const NOWAIT_WRITE_GIVE_UP = 64;

export class BlkBacking {
  private constructor(
    readonly path: string,
    readonly fh: FileHandle,
    readonly readOnly: boolean,
    public size: number,
    /** Regular files can punch holes / zero ranges; block devices go through plain writes. */
    readonly isFile: boolean,
  ) {}

  /**
   * Inline (RWF_NOWAIT) attempts that completed the request, and those that fell back to the thread
   * pool; requests over the inline limit go straight to the pool and are not counted.
   */
  readonly nowait = { hits: 0, misses: 0 };
  private writeRefusals = 0;

  static async open(path: string, readOnly: boolean): Promise<BlkBacking> {
    const fh = await open(path, readOnly ? constants.O_RDONLY : constants.O_RDWR);
    try {
      const st = await fh.stat();
      if (st.isBlockDevice()) return new BlkBacking(path, fh, readOnly, blockDeviceSize(fh.fd), false);
      if (!st.isFile()) throw new Error(`${path} is neither a regular file nor a block device`);
      return new BlkBacking(path, fh, readOnly, st.size, true);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Re-reads the size (the file grew or shrank underneath). */
  async refreshSize(): Promise<number> {
    const st = await this.fh.stat();
    this.size = st.isBlockDevice() ? blockDeviceSize(this.fh.fd) : st.size;
    return this.size;
  }

  /** `alone`: no other request is in flight, so a larger request may be copied inline. */
  async readInto(bufs: Buffer[], pos: number, alone = false): Promise<void> {
    let left = bufs.reduce((s, b) => s + b.length, 0);
    if (left > 0 && left <= (alone ? NOWAIT_MAX_ALONE : NOWAIT_MAX) && bufs.length <= NOWAIT_MAX_BUFS) {
      const n = preadvNowait(this.fh.fd, bufs, pos);
      if (n === left) {
        this.nowait.hits++;
        return;
      }
      this.nowait.misses++;
      if (n > 0) {
        left -= n;
        pos += n;
        bufs = advance(bufs, n);
      }
    }
    while (left > 0) {
      const { bytesRead } = await this.fh.readv(bufs, pos);
      if (bytesRead === 0) {
        // Past the end of a file that shrank: the guest reads zeros, as for a sparse hole.
        for (const b of bufs) b.fill(0);
        return;
      }
      left -= bytesRead;
      pos += bytesRead;
      bufs = advance(bufs, bytesRead);
    }
  }

  async writeFrom(bufs: Buffer[], pos: number, alone = false): Promise<void> {
    let left = bufs.reduce((s, b) => s + b.length, 0);
    if (
      left > 0 &&
      left <= (alone ? NOWAIT_MAX_ALONE : NOWAIT_MAX) &&
      bufs.length <= NOWAIT_MAX_BUFS &&
      this.writeRefusals < NOWAIT_WRITE_GIVE_UP
    ) {
      const n = pwritevNowait(this.fh.fd, bufs, pos);
      if (n === left) {
        this.writeRefusals = 0;
        this.nowait.hits++;
        return;
      }
      this.nowait.misses++;
      if (n > 0) {
        left -= n;
        pos += n;
        bufs = advance(bufs, n);
      } else this.writeRefusals++;
    }
    while (left > 0) {
      const { bytesWritten } = await this.fh.writev(bufs, pos);
      if (bytesWritten === 0) throw new Error("short write");
      left -= bytesWritten;
      pos += bytesWritten;
      bufs = advance(bufs, bytesWritten);
    }
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
  }

  /** Deallocates a range (best effort: a backing that cannot punch holes just keeps the data). */
  async discard(offset: number, len: number): Promise<void> {
    if (!this.isFile) return;
    try {
      await fallocateAsync(this.fh.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOTSUP") throw e;
    }
  }

  /** Zeroes a range, deallocating it when `unmap` (the guest allowed it). */
  async writeZeroes(offset: number, len: number, unmap: boolean): Promise<void> {
    if (this.isFile) {
      try {
        await fallocateAsync(
          this.fh.fd,
          unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
          offset,
          len,
        );
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOTSUP") throw e;
      }
    }
    const zero = Buffer.alloc(Math.min(len, 1 << 20));
    for (let done = 0; done < len; ) {
      const n = Math.min(zero.length, len - done);
      await this.writeFrom([zero.subarray(0, n)], offset + done);
      done += n;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

function advance(bufs: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (n >= b.length) {
      n -= b.length;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}
