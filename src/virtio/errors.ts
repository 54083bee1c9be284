/** A guest broke the virtio contract (bad address, loop, wrong direction...). Never a host bug. */
export class GuestError extends Error {
  override name = "GuestError";
}
