// The guest's console output (the bytes it writes to COM1) cut into lines for the log and the
// pod's console. A guest that never writes a newline cannot grow a line without bound: past
// MAX_CONSOLE_LINE bytes the rest of the line is dropped (and counted).

/** Bytes kept of one console line. */
export const MAX_CONSOLE_LINE = 4096;

export class ConsoleLines {
  private readonly buf = Buffer.alloc(MAX_CONSOLE_LINE);
  private len = 0;
  /** Bytes dropped from over-long lines. */
  truncatedBytes = 0;

  constructor(private readonly onLine: (line: string) => void) {}

  /** One byte from the guest; a newline ends the line (a trailing CR is dropped). */
  byte(b: number): void {
    if (b === 0x0a) {
      const end = this.len > 0 && this.buf[this.len - 1] === 0x0d ? this.len - 1 : this.len;
      this.len = 0;
      this.onLine(this.buf.toString("utf8", 0, end));
    } else if (this.len < MAX_CONSOLE_LINE) {
      this.buf[this.len++] = b;
    } else {
      this.truncatedBytes++;
    }
  }
}
