// One vsock stream connection between a host port and a guest port: its state machine,
// credit accounting (virtio 1.2 §5.10.6.3) in both directions, and the host-side Duplex.
// The device owns the rings; a connection only says what it wants to send next.
import { Duplex } from "node:stream";

export type ConnState = "connecting" | "accepting" | "established" | "closed";

/** Bytes of guest data we are willing to buffer per connection (advertised as buf_alloc). */
export const CONN_BUF_ALLOC = 256 * 1024;

/** A control packet a connection owes the guest before anything else: 0, OP_REQUEST or OP_RESPONSE. */
export type PendingControl = 0 | 1 | 2;

/** What the device must do for a connection; implemented by VsockDevice. */
export interface ConnOwner {
  /** The connection has something to send (data, shutdown, credit update). */
  wake(c: Connection): void;
  /** The host side aborted: send RST and forget the connection. */
  abort(c: Connection): void;
}

export class Connection {
  state: ConnState;
  // Guest's receive window, from the headers it sends.
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  /** Bytes sent to the guest so far (mod 2^32). */
  txCnt = 0;
  /** Bytes received from the guest (mod 2^32). */
  rxCnt = 0;
  /** Bytes handed to the host consumer (mod 2^32); advertised to the guest as fwd_cnt. */
  fwdCnt = 0;
  lastFwdCntSent = 0;
  /** Host → guest data waiting for rx buffers or guest credit. */
  readonly txQueue: { data: Buffer; done: (err?: Error | null) => void }[] = [];
  txQueued = 0;
  /** Guest → host data waiting for the consumer to read. */
  private rxQueue: Buffer[] = [];
  private reading = false;
  /** Flags of a SHUTDOWN to send once txQueue is empty. */
  shutdownToSend = 0;
  /** REQUEST (host connect) or RESPONSE (accepted guest connect) not yet sent. Per connection, not
   * in a queue: a guest that opens and resets connections without posting rx buffers cannot grow
   * anything beyond the connection limit. */
  controlToSend: PendingControl = 0;
  creditUpdateWanted = false;
  /** A CREDIT_REQUEST went out since our last RW: the guest's window is known full. Cleared only
   * by sending data, never by a CREDIT_UPDATE that leaves the window full — otherwise each update
   * triggers another request and the two sides ping-pong at full CPU. */
  creditRequestSent = false;
  peerShutdown = 0;
  /** Host-initiated: the REQUEST went out (an abort must then RST it). */
  requestSent = false;
  /** Host-initiated: settles the pending connect(). */
  onEstablished: ((err?: Error) => void) | undefined;
  readonly stream: VsockStream;

  constructor(
    readonly owner: ConnOwner,
    readonly hostPort: number,
    readonly guestPort: number,
    state: ConnState,
  ) {
    this.state = state;
    this.stream = new VsockStream(this);
  }

  get key(): string {
    return `${this.hostPort}:${this.guestPort}`;
  }

  /** Bytes the guest can still take (its buf_alloc minus what is in flight to it). */
  peerCredit(): number {
    const inFlight = (this.txCnt - this.peerFwdCnt) >>> 0;
    return Math.max(0, this.peerBufAlloc - inFlight);
  }

  /** Whether there is something to put in the rx ring for this connection now. */
  wantsToSend(): boolean {
    if (this.state === "connecting") return this.controlToSend !== 0;
    if (this.state !== "established") return false;
    if (this.controlToSend !== 0 || this.creditUpdateWanted) return true;
    if (this.txQueued > 0 && (this.peerCredit() > 0 || !this.creditRequestSent)) return true;
    return this.txQueued === 0 && this.shutdownToSend !== 0;
  }

  /** Guest data arrived (already validated against our credit). */
  receive(data: Buffer): void {
    this.rxCnt = (this.rxCnt + data.length) >>> 0;
    this.rxQueue.push(data);
    this.deliver();
  }

  /** Bytes received but not yet handed to the consumer. */
  buffered(): number {
    return (this.rxCnt - this.fwdCnt) >>> 0;
  }

  deliver(): void {
    while (this.reading && this.rxQueue.length > 0) {
      const b = this.rxQueue.shift()!;
      this.fwdCnt = (this.fwdCnt + b.length) >>> 0;
      this.reading = this.stream.push(b);
    }
    if (this.rxQueue.length === 0 && this.peerShutdown & 2) this.pushEof();
    // Re-open the guest's window once a quarter of it was consumed (and when it drained fully).
    const freed = (this.fwdCnt - this.lastFwdCntSent) >>> 0;
    if (freed >= CONN_BUF_ALLOC / 4 || (freed > 0 && this.buffered() === 0)) {
      this.creditUpdateWanted = true;
      this.owner.wake(this);
    }
  }

  private eofPushed = false;
  private pushEof(): void {
    if (this.eofPushed) return;
    this.eofPushed = true;
    this.stream.push(null);
  }

  startReading(): void {
    this.reading = true;
    this.deliver();
  }

  /** Takes up to `max` bytes of queued host data for one RW packet, completing writes as they go out. */
  takeTx(max: number): Buffer {
    const parts: Buffer[] = [];
    let n = 0;
    while (n < max && this.txQueue.length > 0) {
      const head = this.txQueue[0]!;
      const take = Math.min(head.data.length, max - n);
      parts.push(head.data.subarray(0, take));
      n += take;
      if (take === head.data.length) {
        this.txQueue.shift();
        head.done();
      } else {
        head.data = head.data.subarray(take);
      }
    }
    this.txQueued -= n;
    this.txCnt = (this.txCnt + n) >>> 0;
    if (n > 0) this.creditRequestSent = false;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /**
   * Tears down locally (after RST either way); pending writes fail. A stream never handed out
   * (connect() pending, acceptor pending) is simply destroyed. A handed-out stream gets `err` one
   * event-loop turn later: its consumer may have received it a moment ago through a promise that
   * has not run yet (RESPONSE and RST in one tx batch), and must still see the error and 'close'.
   */
  close(err?: Error): void {
    if (this.state === "closed") return;
    const handedOut = this.state === "established";
    // Whatever ends a connection the guest never answered settles the pending connect().
    if (this.state === "connecting")
      this.onEstablished?.(
        err ??
          Object.assign(new Error(`vsock connect to guest port ${this.guestPort}: closed before the guest answered`), {
            code: "ECONNRESET",
          }),
      );
    this.state = "closed";
    for (const w of this.txQueue.splice(0)) w.done(err ?? new Error("vsock connection reset"));
    this.txQueued = 0;
    this.controlToSend = 0;
    if (!handedOut) {
      this.stream.destroy();
      return;
    }
    if (err) {
      setImmediate(() => this.stream.destroy(err));
      return;
    }
    // Graceful: the consumer still gets the data and 'end'; the stream is released after that.
    this.peerShutdown |= 2;
    this.deliver();
    if (this.stream.readableEnded) this.stream.destroy();
    else this.stream.once("end", () => this.stream.destroy());
  }
}

/** The host end of a vsock connection, as a Node stream. */
export class VsockStream extends Duplex {
  constructor(private readonly conn: Connection) {
    super({ allowHalfOpen: true });
    // A reset is the guest's to provoke at any moment, also before a consumer listens: it must
    // never become an uncaught 'error' (which exits the shim). Consumers that listen still get it.
    this.on("error", () => {});
  }

  /** The host-side port of this connection (what hybrid vsock reports in `OK <port>`). */
  get localPort(): number {
    return this.conn.hostPort;
  }
  get remotePort(): number {
    return this.conn.guestPort;
  }

  override _read(): void {
    this.conn.startReading();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.conn.state === "closed") {
      cb(new Error("vsock connection closed"));
      return;
    }
    if (chunk.length === 0) {
      cb();
      return;
    }
    this.conn.txQueue.push({ data: chunk, done: cb });
    this.conn.txQueued += chunk.length;
    this.conn.owner.wake(this.conn);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.conn.state !== "closed") {
      this.conn.shutdownToSend |= 2; // SHUTDOWN_SEND: no more data from the host
      this.conn.owner.wake(this.conn);
    }
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.conn.state !== "closed") this.conn.owner.abort(this.conn);
    cb(err);
  }
}
