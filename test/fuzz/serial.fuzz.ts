// The serial port (COM1) as a hostile guest drives it through the port-I/O bus: accesses of any
// width at and around its eight ports, the divisor latch on and off, loopback floods, interrupt
// enables toggled, FIFO clears, transmit floods with and without newlines, and host input while
// the guest does not read. The bytes it transmits go through the VMM's console line splitter.
// Invariants on every case: no uncaught error; at most one interrupt edge and one transmitted byte
// per access; the receive FIFO never above RX_FIFO_MAX; no console line above MAX_CONSOLE_LINE.
import { Bus } from "../../src/vmm/bus.ts";
import { ConsoleLines, MAX_CONSOLE_LINE } from "../../src/vmm/console.ts";
import { COM1_PORT } from "../../src/vmm/layout.ts";
import { RX_FIFO_MAX, Serial } from "../../src/vmm/serial.ts";
import { type CaseContext, type Fuzzer, runCases } from "./fuzz.ts";

const THR = 0;
const IER = 1;
const FCR = 2;
const LCR = 3;
const MCR = 4;

function oneCase({ rng, rec }: CaseContext): void {
  let longest = 0;
  const lines = new ConsoleLines((l) => {
    rec.op("line");
    longest = Math.max(longest, l.length);
  });
  let edges = 0;
  let sent = 0;
  const serial = new Serial(
    (b) => {
      sent++;
      lines.byte(b);
    },
    () => edges++,
  );
  const bus = new Bus("pio");
  bus.register(COM1_PORT, 8, serial, "com1");
  /** One guest access; checks what a single access may cause. */
  const access = (write: boolean, port: number, value: number, width = 1) => {
    edges = 0;
    sent = 0;
    const data = new Uint8Array(width);
    if (write) new DataView(data.buffer).setUint8(0, value & 0xff);
    if (write) bus.write(COM1_PORT + port, data);
    else bus.read(COM1_PORT + port, data);
    rec.bounded("serialIrqEdgesPerAccess", edges, 1);
    rec.bounded("serialBytesOutPerAccess", sent, 1);
    rec.bounded("serialRxQueued", serial.rxQueued, RX_FIFO_MAX);
  };
  for (let n = rng.range(1, 30); n > 0; n--) {
    const op = rng.weighted({ write: 12, read: 8, text: 6, flood: 0.3, loopFlood: 0.3, input: 4, drain: 2, toggle: 4 });
    rec.op(op);
    switch (op) {
      case "write":
        access(true, rng.range(-2, 9), rng.u8(), rng.pick([1, 1, 1, 2, 4]));
        break;
      case "read":
        access(false, rng.range(-2, 9), 0, rng.pick([1, 1, 1, 2, 4]));
        break;
      case "text": // console lines, some with CRLF, some not ended
        for (let k = rng.int(200); k > 0; k--)
          access(true, THR, rng.chance(0.05) ? 0x0a : rng.chance(0.02) ? 0x0d : rng.u8());
        break;
      case "flood": // a line that never ends
        for (let k = rng.range(MAX_CONSOLE_LINE, MAX_CONSOLE_LINE + 2000); k > 0; k--) access(true, THR, 0x41);
        break;
      case "loopFlood": // loopback: every transmitted byte lands in the receive FIFO
        access(true, MCR, 0x10 | rng.int(16));
        for (let k = rng.range(100, RX_FIFO_MAX + 500); k > 0; k--) access(true, THR, rng.u8());
        break;
      case "input":
        serial.input(rng.bytes(rng.int(RX_FIFO_MAX + 1000)));
        rec.bounded("serialRxQueued", serial.rxQueued, RX_FIFO_MAX);
        break;
      case "drain":
        for (let k = rng.int(300); k > 0; k--) access(false, THR, 0);
        break;
      case "toggle": // DLAB, interrupt enables, FIFO clear, modem control
        access(true, rng.pick([LCR, IER, FCR, MCR]), rng.u8());
        break;
    }
    rec.state(serial.rxQueued > 0 ? "rx-pending" : "rx-empty");
  }
  rec.bounded("consoleLineLength", longest, MAX_CONSOLE_LINE);
}

export const fuzzer: Fuzzer = {
  name: "serial",
  run: (opts) => runCases("serial", opts, oneCase),
};
