// The cove runtime as a delimited block appended to containerd's config.toml. Appending (instead of
// parsing and re-serialising) keeps the user's formatting and comments; `cove uninstall` cuts out
// exactly the text that was added, so the file comes back byte for byte. The runtime table itself is
// the snippet in deploy/containerd/ for the file's config version (2: containerd 1.6/1.7, 3: 2.x).
import { parse } from "smol-toml";

export const BLOCK_BEGIN = "# >>> cove runtime: added by `cove install`, removed by `cove uninstall` >>>";
export const BLOCK_END = "# <<< cove runtime <<<";

export type ConfigVersion = 2 | 3;

/** The snippet file for a config version, relative to the checkout (or an installed prefix). */
export function snippetFile(version: ConfigVersion): string {
  return version === 3 ? "deploy/containerd/config-v3.toml" : "deploy/containerd/config.toml";
}

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === "object" && v !== null && !Array.isArray(v);

/** Where the CRI runtimes live for a config version. */
export function runtimesPath(version: ConfigVersion): string[] {
  return version === 3
    ? ["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"]
    : ["plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"];
}

/**
 * The snippet's tables (its header comments and `version` line dropped), with the runtime's
 * ConfigPath set to `coveConfig`, wrapped in the begin/end markers.
 */
export function runtimeBlock(snippet: string, coveConfig: string): string {
  const lines = snippet.split("\n");
  const first = lines.findIndex((l) => l.startsWith("["));
  if (first < 0) throw new Error("containerd snippet has no table");
  const body = lines
    .slice(first)
    .join("\n")
    .trimEnd()
    .replace(/^(\s*ConfigPath\s*=\s*)"[^"\n]*"/m, (_m, key: string) => `${key}${JSON.stringify(coveConfig)}`);
  if (!body.includes(JSON.stringify(coveConfig))) throw new Error("containerd snippet has no ConfigPath to set");
  return `${BLOCK_BEGIN}\n${body}\n${BLOCK_END}\n`;
}

/** What containerd's config says about itself, for choosing the snippet. */
export interface ConfigShape {
  /** The declared `version`; undefined when the file has none (containerd then reads it as 1). */
  version: number | undefined;
  /** The file has no keys at all (empty or only comments). */
  empty: boolean;
  /** Whether a runtime named `cove` is defined outside our block (v2 or v3 location). */
  foreignCove: boolean;
}

export function configShape(text: string): ConfigShape {
  const doc = parse(removeBlock(text).text) as Table;
  const at = (path: string[]) => path.reduce<unknown>((v, k) => (isTable(v) ? v[k] : undefined), doc);
  const foreignCove = [2, 3].some((v) => isTable(at([...runtimesPath(v as ConfigVersion), "cove"])));
  return {
    version: typeof doc.version === "number" ? doc.version : undefined,
    empty: Object.keys(doc).length === 0,
    foreignCove,
  };
}

/**
 * The config version the block must be written in: the file's own (a version 2 file on containerd
 * 2.x stays version 2: 2.x migrates it on load), or for a new or empty file the one containerd
 * reads natively (3 from 2.0 on). Throws for what cannot be appended to safely.
 */
export function chooseVersion(shape: ConfigShape | undefined, containerdMajor: number | undefined): ConfigVersion {
  const native: ConfigVersion = containerdMajor !== undefined && containerdMajor >= 2 ? 3 : 2;
  if (!shape || shape.empty) return native;
  if (shape.version === 2 || shape.version === 3) {
    if (shape.version === 3 && containerdMajor !== undefined && containerdMajor < 2) {
      throw new Error(`the config declares version 3, which containerd ${containerdMajor}.x cannot read`);
    }
    return shape.version;
  }
  throw new Error(
    `the config declares ${shape.version === undefined ? "no version (containerd reads it as version 1)" : `version ${shape.version}`}; ` +
      "migrate it first (`containerd config migrate`), then run cove install again",
  );
}

/**
 * The config with the block added (or put in place of an older one of ours). `added` is the exact
 * text inserted, for `cove uninstall`. A new or empty file gets the `version` line inside the block.
 */
export function addBlock(
  original: string,
  block: string,
  version: ConfigVersion,
  shape: ConfigShape | undefined,
): { text: string; added: string; changed: boolean } {
  const existing = findBlock(original);
  const body =
    !shape || shape.empty ? block.replace(`${BLOCK_BEGIN}\n`, `${BLOCK_BEGIN}\nversion = ${version}\n\n`) : block;
  if (existing) {
    const current = original.slice(existing.start, existing.end);
    const added = current.startsWith("\n") && !body.startsWith("\n") ? `\n${body}` : body;
    if (current === added) return { text: original, added, changed: false };
    return { text: original.slice(0, existing.start) + added + original.slice(existing.end), added, changed: true };
  }
  // A blank line before the block, and a newline first if the file does not end with one.
  const sep = original === "" ? "" : original.endsWith("\n") ? "\n" : "\n\n";
  const added = sep + body;
  const text = original + added;
  parse(text); // our block must not clash with the user's tables (e.g. an inline `runtimes = {…}`)
  return { text, added, changed: true };
}

/** Where our block is: from the separator before BLOCK_BEGIN to the end of the BLOCK_END line. */
export function findBlock(text: string): { start: number; end: number } | undefined {
  const b = text.indexOf(`${BLOCK_BEGIN}\n`);
  if (b < 0) return undefined;
  const e = text.indexOf(`${BLOCK_END}\n`, b);
  if (e < 0) throw new Error(`containerd's config has "${BLOCK_BEGIN}" but not "${BLOCK_END}": fix it by hand`);
  let start = b;
  // The blank line (and a missing final newline) addBlock put before the block.
  if (text.slice(0, start).endsWith("\n\n")) start -= 1;
  return { start, end: e + BLOCK_END.length + 1 };
}

/**
 * The config without our block. With `added` (what install recorded) that exact text is cut out,
 * so the file is byte for byte what it was; without it, the marked lines and the separator.
 */
export function removeBlock(text: string, added?: string): { text: string; removed: boolean } {
  if (added) {
    const at = text.lastIndexOf(added);
    if (at >= 0) return { text: text.slice(0, at) + text.slice(at + added.length), removed: true };
  }
  const f = findBlock(text);
  if (!f) return { text, removed: false };
  return { text: text.slice(0, f.start) + text.slice(f.end), removed: true };
}
