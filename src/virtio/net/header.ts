// virtio-net wire facts (virtio 1.2 §5.1): feature bits, the configuration space and the
// per-frame header. With VIRTIO_F_VERSION_1 the header is always struct virtio_net_hdr_v1
// (12 bytes, num_buffers included), and the tap is set to the same header size, so frames pass
// between the guest and the tap with the header untouched except num_buffers.
import { GuestError } from "../errors.ts";

export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n;
export const VIRTIO_NET_F_MTU = 3n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_GUEST_TSO4 = 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 8n;
export const VIRTIO_NET_F_GUEST_ECN = 9n;
export const VIRTIO_NET_F_HOST_TSO4 = 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 12n;
export const VIRTIO_NET_F_HOST_ECN = 13n;
export const VIRTIO_NET_F_MRG_RXBUF = 15n;
export const VIRTIO_NET_F_STATUS = 16n;

export const VIRTIO_NET_S_LINK_UP = 1;

export const VIRTIO_ID_NET = 1;

/** sizeof(struct virtio_net_hdr_v1). */
export const NET_HDR_SIZE = 12;
/** Offset of num_buffers in the header. */
export const NUM_BUFFERS_OFFSET = 10;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;

export const ETH_HLEN = 14;
/**
 * The largest Ethernet frame either side may hand over: a 64 KiB GSO super-frame plus its
 * Ethernet and VLAN headers. Anything longer is hostile (tx) or cannot be delivered (rx).
 */
export const MAX_FRAME_LEN = 65536 + ETH_HLEN + 4;

/** struct virtio_net_config up to mtu: mac[6], status, max_virtqueue_pairs, mtu. */
export const NET_CONFIG_SIZE = 12;

export interface NetConfig {
  mac: Buffer;
  mtu: number;
  linkUp: boolean;
}

export function encodeConfig(c: NetConfig): Buffer {
  const b = Buffer.alloc(NET_CONFIG_SIZE);
  c.mac.copy(b, 0, 0, 6);
  b.writeUInt16LE(c.linkUp ? VIRTIO_NET_S_LINK_UP : 0, 6);
  b.writeUInt16LE(1, 8); // one rx/tx pair (no VIRTIO_NET_F_MQ)
  b.writeUInt16LE(c.mtu, 10);
  return b;
}

/** "aa:bb:cc:dd:ee:ff" → 6 bytes; throws on anything else. */
export function parseMac(s: string): Buffer {
  const m = /^([0-9a-f]{2})(?::([0-9a-f]{2})){5}$/i.exec(s);
  if (!m) throw new Error(`invalid MAC address ${JSON.stringify(s)}`);
  return Buffer.from(s.split(":").map((x) => Number.parseInt(x, 16)));
}

export function formatMac(b: Uint8Array): string {
  return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** The fields of a header a device cares about (the rest pass through to the tap unread). */
export interface NetHeader {
  flags: number;
  gsoType: number;
  numBuffers: number;
}

export function decodeHeader(b: Buffer): NetHeader {
  if (b.length < NET_HDR_SIZE) throw new GuestError(`virtio-net header of ${b.length} bytes (need ${NET_HDR_SIZE})`);
  return { flags: b[0]!, gsoType: b[1]!, numBuffers: b.readUInt16LE(NUM_BUFFERS_OFFSET) };
}
