// The kernel command line. Parameters with a dot (cove.*) are not handed to init as environment or
// arguments, so the agent reads them here.

/** Parses /proc/cmdline: `key=value` → value, a bare `flag` → "". Later occurrences win. */
export function parseCmdline(text: string): Map<string, string> {
  const out = new Map<string, string>();
  // Quoted values ("a b") keep their spaces, as the kernel's own parser does.
  const re = /([^\s=]+)(?:=("[^"]*"|\S*))?/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const key = m[1];
    if (!key) continue;
    let v = m[2] ?? "";
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
    out.set(key, v);
  }
  return out;
}

/** A boolean flag: "1", "y", "yes", "true", "on" or bare. */
export function flag(params: Map<string, string>, key: string): boolean {
  const v = params.get(key);
  return v !== undefined && ["", "1", "y", "yes", "true", "on"].includes(v.toLowerCase());
}
