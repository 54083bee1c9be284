// virtio-vsock packet header (virtio 1.2 §5.10.6): 44 bytes, little-endian.
export const HDR_SIZE = 44;
export const HOST_CID = 2;
/** Largest payload either side puts in one packet (Linux VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const MAX_PAYLOAD = 64 * 1024;

export const TYPE_STREAM = 1;

export const OP_REQUEST = 1;
export const OP_RESPONSE = 2;
export const OP_RST = 3;
export const OP_SHUTDOWN = 4;
export const OP_RW = 5;
export const OP_CREDIT_UPDATE = 6;
export const OP_CREDIT_REQUEST = 7;

export const SHUTDOWN_RCV = 1;
export const SHUTDOWN_SEND = 2;

export const OP_NAMES: Record<number, string> = {
  1: "REQUEST",
  2: "RESPONSE",
  3: "RST",
  4: "SHUTDOWN",
  5: "RW",
  6: "CREDIT_UPDATE",
  7: "CREDIT_REQUEST",
};

export interface VsockHeader {
  srcCid: bigint;
  dstCid: bigint;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

export function decodeHeader(b: Buffer): VsockHeader {
  return {
    srcCid: b.readBigUInt64LE(0),
    dstCid: b.readBigUInt64LE(8),
    srcPort: b.readUInt32LE(16),
    dstPort: b.readUInt32LE(20),
    len: b.readUInt32LE(24),
    type: b.readUInt16LE(28),
    op: b.readUInt16LE(30),
    flags: b.readUInt32LE(32),
    bufAlloc: b.readUInt32LE(36),
    fwdCnt: b.readUInt32LE(40),
  };
}

export function encodeHeader(h: VsockHeader, out: Buffer = Buffer.alloc(HDR_SIZE)): Buffer {
  out.writeBigUInt64LE(h.srcCid, 0);
  out.writeBigUInt64LE(h.dstCid, 8);
  out.writeUInt32LE(h.srcPort >>> 0, 16);
  out.writeUInt32LE(h.dstPort >>> 0, 20);
  out.writeUInt32LE(h.len >>> 0, 24);
  out.writeUInt16LE(h.type, 28);
  out.writeUInt16LE(h.op, 30);
  out.writeUInt32LE(h.flags >>> 0, 32);
  out.writeUInt32LE(h.bufAlloc >>> 0, 36);
  out.writeUInt32LE(h.fwdCnt >>> 0, 40);
  return out;
}
