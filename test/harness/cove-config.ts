// The cove.toml an end-to-end test hands the shim (containerd's runtime option ConfigPath): this
// checkout's guest artifacts, a cache in the test's directory, and whatever sections the test adds.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { guestArtifacts } from "../../src/guest/paths.ts";

export interface CoveTestConfig {
  /** Extra `key = value` lines for [guest] (e.g. memory_mib = 512). */
  guest?: string[];
  /** Extra lines for [pod]; writable_layer_mib defaults to 64. */
  pod?: string[];
  /** Whole extra sections, appended as written. */
  more?: string;
}

/** Writes `<dir>/cove.toml` and returns its path. */
export function writeCoveConfig(dir: string, c: CoveTestConfig = {}): string {
  const art = guestArtifacts();
  const pod = c.pod ?? [];
  if (!pod.some((l) => l.startsWith("writable_layer_mib"))) pod.push("writable_layer_mib = 64");
  const text = [
    `cache_dir = "${join(dir, "cache")}"`,
    "",
    "[guest]",
    `kernel = "${art.kernel}"`,
    `image = "${art.rootfs}"`,
    ...(c.guest ?? []),
    "",
    "[pod]",
    ...pod,
    "",
    c.more ?? "",
  ].join("\n");
  const path = join(dir, "cove.toml");
  writeFileSync(path, text);
  return path;
}
