// Which committed snapshots a container's layer directories are, asked of containerd: the
// container's snapshot key, then parent by parent down the chain. containerd's image unpacker names
// each committed layer snapshot by its chain ID (the digest of this layer's diff and every layer
// below it), so "<snapshotter>/<name>" identifies the directory's content, in every containerd root
// and after every re-pull: the layer cache keys on it (src/rootfs/layers.ts).
//
// The overlay mount lists lowerdirs nearest parent first, exactly the order of this walk; a chain
// that does not match the mount (another length, a snapshot that is not committed) is not guessed
// at: the caller falls back to keying by directory.
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import type { ContainerdLookup } from "./containerd.ts";

/** A snapshot name as containerd makes them: printable, bounded (it goes into a cache key and logs). */
const NAME = /^[\x21-\x7e]{1,512}$/;

/**
 * The "<snapshotter>/<name>" of each of the `count` committed snapshots below container `id`'s
 * snapshot, nearest first; undefined when containerd cannot say (logged, never thrown).
 */
export async function committedChain(
  open: () => Promise<ContainerdLookup>,
  id: string,
  count: number,
  log: Logger,
): Promise<string[] | undefined> {
  let ctd: ContainerdLookup | undefined;
  try {
    ctd = await open();
    const c = await ctd.container(id);
    if (!NAME.test(c.snapshotter) || !NAME.test(c.snapshotKey)) {
      throw new Error(`container ${id} has no snapshot (snapshotter "${c.snapshotter}", key "${c.snapshotKey}")`);
    }
    const chain: string[] = [];
    let key = (await ctd.snapshot(c.snapshotter, c.snapshotKey)).parent;
    while (chain.length < count) {
      if (!NAME.test(key)) throw new Error(`the snapshot chain ends after ${chain.length} of ${count} layers`);
      const info = await ctd.snapshot(c.snapshotter, key);
      if (info.name !== key)
        throw new Error(`containerd answered for snapshot ${key} with ${JSON.stringify(info.name)}`);
      if (info.kind !== "COMMITTED") throw new Error(`snapshot ${key} is ${info.kind}, not committed`);
      chain.push(`${c.snapshotter}/${key}`);
      key = info.parent;
    }
    if (key !== "") throw new Error(`the snapshot chain has more than the mount's ${count} layers`);
    return chain;
  } catch (e) {
    log.warn(
      { id, err: errorMessage(e) },
      "rootfs: containerd did not name the layers' snapshots; their images are keyed by directory (not shared with other containerd roots or re-pulls)",
    );
    return undefined;
  } finally {
    ctd?.close();
  }
}
