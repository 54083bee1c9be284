/** Per-device counters for virtio-vsock. */
export class VsockMetrics {
  rxPackets = 0;
  txPackets = 0;
  rxBytes = 0;
  txBytes = 0;
  connectionsOpened = 0;
  /** Connections created either way, whether or not they got established. */
  connectionsCreated = 0;
  connectionsRefused = 0;
  resetsSent = 0;
  resetsReceived = 0;
  /** Packets dropped because they broke the protocol (wrong CID, over credit, ...). */
  invalid = 0;
  creditUpdatesSent = 0;
  /** RSTs not queued because their limit (MAX_PENDING_RST, + MAX_CONNECTIONS for owed ones) was reached. */
  resetsDropped = 0;
  /** Times data waited because the next rx buffer had no room past the header. */
  rxBuffersTooSmall = 0;
}
