// Where a virtio-net device sends and receives frames. Frames cross this boundary with their
// 12-byte virtio_net_hdr_v1 in front. The one real implementation is the tap (tap.ts); tests may
// plug in others. Every call is non-blocking: "would block" is a return value, never a wait.
export interface NetHostEnd {
  /** Reads one frame into `bufs`: its length, or -1 if none is waiting. */
  recv(bufs: Buffer[]): number;
  /** Sends one frame gathered from `bufs`: bytes taken, or -1 if the host end is full. Throws if it refuses the frame. */
  send(bufs: Buffer[]): number;
  /** The offloads the guest accepts in the frames it receives (TUN_F_* flags). */
  setOffload(flags: number): void;
  /** Registers the readiness callback; `want` says which readiness to watch. */
  onReady(cb: (readable: boolean, writable: boolean) => void): void;
  want(readable: boolean, writable: boolean): void;
  close(): void;
}
