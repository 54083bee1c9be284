import { fn } from "./load.ts";

/** TUNSETOFFLOAD flags: offloads the tap's reader accepts in the frames it reads (linux/if_tun.h). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;

export interface TapFd {
  fd: number;
  /** The interface name the kernel gave the tap (inside its namespace). */
  name: string;
}

/**
 * Creates a tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR when `vnetHdrSize` > 0, never attaching to an
 * existing one) inside the network namespace at `netns` (null: the caller's), entering it on a
 * short-lived helper thread. The fd is non-blocking and close-on-exec; closing it removes the tap.
 */
export function tapOpen(name: string, netns: string | null, vnetHdrSize: number): TapFd {
  const [fd, actual] = fn<(n: string, ns: string | null, h: number) => [number, string]>("tapOpen")(
    name,
    netns,
    vnetHdrSize,
  );
  return { fd, name: actual };
}

export function tapSetOffload(fd: number, flags: number): void {
  fn<(fd: number, f: number) => void>("tapSetOffload")(fd, flags);
}

export function tapVnetHdrSize(fd: number): number {
  return fn<(fd: number) => number>("tapVnetHdrSize")(fd);
}

/** Reads one frame into the buffers: its length, or -1 if none is waiting. */
export function tapReadv(fd: number, bufs: Uint8Array[]): number {
  return fn<(fd: number, b: Uint8Array[]) => number>("tapReadv")(fd, bufs);
}

/** Writes one frame gathered from the buffers: bytes written, or -1 if the tap would block. */
export function tapWritev(fd: number, bufs: Uint8Array[]): number {
  return fn<(fd: number, b: Uint8Array[]) => number>("tapWritev")(fd, bufs);
}
