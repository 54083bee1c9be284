// Closing an fd the front-end sent us: it may already be closed (or never have been valid), which
// must never throw into the event loop.
import { closeFd } from "../../native/fdpass.ts";

export function safeClose(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed
  }
}
