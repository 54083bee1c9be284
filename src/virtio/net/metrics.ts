/** Per-device counters for virtio-net (rx: tap → guest, tx: guest → tap, as the guest sees it). */
export class NetMetrics {
  rxFrames = 0;
  rxBytes = 0;
  /** Guest buffers filled (more than one per frame with mergeable rx buffers). */
  rxBuffers = 0;
  /** Frames read from the tap that could not be delivered (too short, too long for the guest's buffers). */
  rxDropped = 0;
  /** Times the tap had frames but the guest had no rx buffers (the tap is then not read). */
  rxNoBuffers = 0;
  txFrames = 0;
  txBytes = 0;
  /** Guest frames dropped as malformed (short header, oversized, writable descriptors). */
  txInvalid = 0;
  /** Guest frames the tap refused (e.g. a GSO header the kernel rejects, link down). */
  txErrors = 0;
  /** Times the tap was full and tx waited for it to drain. */
  txBlocked = 0;
}
