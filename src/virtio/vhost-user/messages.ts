// vhost-user protocol constants and framing (QEMU docs/interop/vhost-user.rst). In the spec's words
// QEMU is the front-end and we are the back-end; the channel on which a back-end sends requests to
// the front-end is the back-end channel (older texts say "slave").
export const VHOST_USER_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
export const HEADER_SIZE = 12;
/** Largest payload we accept (SET_MEM_TABLE with 8 regions is 264; config ≤ 256 + 12). */
export const MAX_PAYLOAD = 4096;
/** Most fds one message carries (SET_MEM_TABLE: one per region, at most 8); more closes the connection. */
export const MAX_MESSAGE_FDS = 8;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export const REQ_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Req).map(([k, v]) => [v, k]));

/** Back-end → front-end requests on the back-end channel. */
export const BACKEND_CONFIG_CHANGE_MSG = 2;

/** Feature bit that says the back-end speaks protocol features. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30n;

export const ProtocolFeature = {
  MQ: 0n,
  LOG_SHMFD: 1n,
  REPLY_ACK: 3n,
  BACKEND_REQ: 5n,
  CONFIG: 9n,
  RESET_DEVICE: 13n,
} as const;

/** SET_VRING_KICK/CALL/ERR payload: ring index in bits 0-7, bit 8 = no fd (polling mode). */
export const VRING_IDX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;

/** One message from the front-end: request, flags, payload, and the fds that came with it. */
export interface Message {
  req: number;
  flags: number;
  payload: Buffer;
  fds: number[];
}

/** A message on the wire: the 12-byte header (request, flags with our version, size), then the payload. */
export function encodeMessage(req: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const m = Buffer.alloc(HEADER_SIZE + payload.length);
  m.writeUInt32LE(req, 0);
  m.writeUInt32LE(VHOST_USER_VERSION | flags, 4);
  m.writeUInt32LE(payload.length, 8);
  payload.copy(m, HEADER_SIZE);
  return m;
}

/** A u64 payload: a GET_* result, or a REPLY_ACK status (0 = success). */
export function u64Payload(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v, 0);
  return b;
}
