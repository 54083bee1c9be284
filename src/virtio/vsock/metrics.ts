/** Per-device counters for virtio-vsock. */
export class VsockMetrics {
  rxPackets = 0;
  txPackets = 0;
  rxBytes = 0;
  txBytes = 0;
  connectionsOpened = 0;
  connectionsRefused = 0;
  resetsSent = 0;
  resetsReceived = 0;
  /** Packets dropped because they broke the protocol (wrong CID, over credit, ...). */
  invalid = 0;
  creditUpdatesSent = 0;
}
