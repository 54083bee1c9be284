// Parsing of virtio-blk requests (virtio 1.2 §5.2.6) from a descriptor chain. Pure: no I/O.
// The chain is: a 16-byte header (device-readable), then data (readable for writes, writable
// for reads), then one status byte (device-writable, the last byte of the chain).
import { GuestError } from "../errors.ts";
import { type DescriptorChain, gather, sliceBufs } from "../queue/chain.ts";

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

export const SECTOR_SIZE = 512;
export const VIRTIO_BLK_ID_BYTES = 20;
const HEADER = 16;
const SEGMENT = 16;
export const WRITE_ZEROES_FLAG_UNMAP = 1;

export interface Segment {
  sector: number;
  sectors: number;
  flags: number;
}

export interface BlkRequest {
  type: number;
  sector: number;
  /** Data buffers in guest memory: destination for IN/GET_ID, source for OUT. */
  data: Buffer[];
  dataLen: number;
  /** DISCARD / WRITE_ZEROES ranges. */
  segments: Segment[];
  /** The status byte in guest memory. */
  status: Buffer;
}

/** Splits a chain into a request. Throws GuestError if the chain's shape breaks the spec. */
export function parseRequest(chain: DescriptorChain, maxSegments: number): BlkRequest {
  if (chain.readableLen < HEADER) throw new GuestError(`blk request header is ${chain.readableLen} bytes, need 16`);
  if (chain.writableLen < 1) throw new GuestError("blk request has no device-writable status byte");
  const hdr = Buffer.alloc(HEADER);
  gather(chain.readable, hdr);
  const type = hdr.readUInt32LE(0);
  const sector64 = hdr.readBigUInt64LE(8);
  // Sectors beyond 2^53 cannot be in any disk; keep them as an impossible value for the range check.
  const sector = sector64 > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(sector64);
  const status = sliceBufs(chain.writable, chain.writableLen - 1, 1)[0]!;
  const inLen = chain.writableLen - 1;
  const outLen = chain.readableLen - HEADER;
  const req: BlkRequest = { type, sector, data: [], dataLen: 0, segments: [], status };
  switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_GET_ID:
      if (outLen !== 0) throw new GuestError(`blk read with ${outLen} device-readable data bytes (wrong direction)`);
      req.data = sliceBufs(chain.writable, 0, inLen);
      req.dataLen = inLen;
      break;
    case VIRTIO_BLK_T_OUT:
      if (inLen !== 0) throw new GuestError(`blk write with ${inLen} device-writable data bytes (wrong direction)`);
      req.data = sliceBufs(chain.readable, HEADER, outLen);
      req.dataLen = outLen;
      break;
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
      if (inLen !== 0) throw new GuestError("blk discard/write-zeroes with device-writable data");
      if (outLen === 0 || outLen % SEGMENT !== 0) throw new GuestError(`blk discard payload of ${outLen} bytes`);
      const n = outLen / SEGMENT;
      if (n > maxSegments) throw new GuestError(`blk discard with ${n} segments (max ${maxSegments})`);
      const raw = Buffer.alloc(outLen);
      gather(chain.readable, raw, HEADER);
      for (let i = 0; i < n; i++) {
        const s = raw.readBigUInt64LE(i * SEGMENT);
        req.segments.push({
          sector: s > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(s),
          sectors: raw.readUInt32LE(i * SEGMENT + 8),
          flags: raw.readUInt32LE(i * SEGMENT + 12),
        });
      }
      break;
    }
    default:
      // FLUSH and unknown types carry no data we use; unknown ones are answered UNSUPP.
      break;
  }
  return req;
}
