// Content hashes for cache keys.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

const fileHashes = new Map<string, string>();

/** sha256 of a file's bytes (memoised for the life of the process: one build reads each input once). */
export function fileSha256(path: string): string {
  let h = fileHashes.get(path);
  if (!h) {
    h = sha256(readFileSync(path));
    fileHashes.set(path, h);
  }
  return h;
}

/** A short, stable key for any JSON-serialisable description of inputs. */
export function keyOf(inputs: unknown): string {
  return sha256(JSON.stringify(inputs)).slice(0, 20);
}
