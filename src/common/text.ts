// Text that came from the guest (its console, the agent's error messages, a stdio answer line) on
// its way into a log field or an error returned to containerd: cut to a bound and with every
// control character escaped, so that a guest can neither make containerd store megabytes per error
// nor write terminal escapes, carriage returns or bidi overrides into an operator's terminal or log.

/** C0/C1 controls (newline and tab kept), DEL, line/paragraph separators, bidi embeddings/isolates. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escaped(c: string): string {
  const n = c.charCodeAt(0);
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
}

/**
 * `s` with controls escaped, at most `max` characters long. `keep: "end"` keeps the tail (a console:
 * its last lines say why the guest died), otherwise the head; the cut is marked with "…".
 */
export function printable(s: string, max: number, keep: "start" | "end" = "start"): string {
  // Cut before escaping (escaping at most quadruples it), then again after.
  let t = keep === "end" ? s.slice(-max) : s.slice(0, max);
  t = t.replace(UNSAFE, escaped);
  const cut = t.length > max || s.length > max;
  if (!cut) return t;
  return keep === "end" ? `…${t.slice(-(max - 1))}` : `${t.slice(0, max - 1)}…`;
}
