// KVM's binary statistics (KVM_GET_STATS_FD, Linux ≥ 5.14): per-VM and per-vCPU counters such as
// exits, io_exits, mmio_exits and irq_injections, counted by the kernel — including the exits
// KVM handles itself (ioeventfd, irqfd, EOIs) that never reach the VMM. Benchmarks use them to
// count VM exits per device request.
import { closeSync, readSync } from "node:fs";
import { kvmIoctl } from "../native/kvm.ts";

/** _IO(KVMIO, 0xce) */
export const KVM_GET_STATS_FD = 0xaece;
const HEADER_SIZE = 24;
const DESC_FIXED = 16;

function pread(fd: number, len: number, pos: number): Buffer {
  const b = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return b.subarray(0, got);
}

/** Parses a stats fd's header, descriptors and data into name → value (first element of each). */
export function readStats(fd: number): Map<string, bigint> {
  const h = pread(fd, HEADER_SIZE, 0);
  if (h.length < HEADER_SIZE) throw new Error("short KVM stats header");
  const nameSize = h.readUInt32LE(4);
  const numDesc = h.readUInt32LE(8);
  const descOffset = h.readUInt32LE(16);
  const dataOffset = h.readUInt32LE(20);
  const descLen = DESC_FIXED + nameSize;
  if (numDesc > 4096 || nameSize > 4096) throw new Error("implausible KVM stats header");
  const descs = pread(fd, numDesc * descLen, descOffset);
  const out = new Map<string, bigint>();
  const entries: { name: string; offset: number; size: number }[] = [];
  let dataLen = 0;
  for (let i = 0; i < numDesc; i++) {
    const d = descs.subarray(i * descLen, (i + 1) * descLen);
    if (d.length < descLen) break;
    const size = d.readUInt16LE(6);
    const offset = d.readUInt32LE(8);
    const raw = d.subarray(DESC_FIXED);
    const end = raw.indexOf(0);
    const name = raw.subarray(0, end < 0 ? raw.length : end).toString("utf8");
    entries.push({ name, offset, size });
    dataLen = Math.max(dataLen, offset + size * 8);
  }
  const data = pread(fd, dataLen, dataOffset);
  for (const e of entries) if (e.offset + 8 <= data.length) out.set(e.name, data.readBigUInt64LE(e.offset));
  return out;
}

/** One snapshot of the stats of a VM or vCPU fd. */
export function kvmStats(vmOrVcpuFd: number): Map<string, bigint> {
  const fd = kvmIoctl(vmOrVcpuFd, KVM_GET_STATS_FD);
  try {
    return readStats(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A stats fd kept open: it is readable at any time, even while the vCPU is in KVM_RUN (getting
 * the fd is a vCPU ioctl, serialised with KVM_RUN; reading it is not).
 */
export class StatsReader {
  readonly fd: number;
  private closed = false;
  constructor(vmOrVcpuFd: number) {
    this.fd = kvmIoctl(vmOrVcpuFd, KVM_GET_STATS_FD);
  }
  read(): Map<string, bigint> {
    // After close() the fd number may already belong to another file.
    if (this.closed) throw new Error("KVM stats fd closed");
    return readStats(this.fd);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}
