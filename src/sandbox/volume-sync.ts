// Keeps the pod's copied volumes (src/sandbox/volumes.ts) in step with the host: every few seconds
// each volume's tree is fingerprinted (lstat only) and, when it changed, read and sent whole with
// SyncFiles. Kubelet refreshes ConfigMaps and Secrets within about a minute and rotates tokens
// hourly; a 2 s poll of a few small trees costs next to nothing.
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import type { SyncFiles } from "./agent/index.ts";
import { type CopiedVolume, copyTree, snapshotTree } from "./volumes.ts";

export const VOLUME_POLL_MS = 2000;

interface Tracked {
  volume: CopiedVolume;
  fingerprint: string;
  users: Set<string>;
}

export class VolumeSync {
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly send: (req: SyncFiles) => Promise<void>,
    private readonly log: Logger,
    private readonly pollMs = VOLUME_POLL_MS,
  ) {}

  /** The volumes of a container being created: their trees now, for CreateContainer. */
  add(containerId: string, copies: readonly CopiedVolume[]): SyncFiles[] {
    const out: SyncFiles[] = [];
    for (const v of copies) {
      const { fingerprint, entries } = copyTree(v.hostPath);
      out.push({ storage_id: v.storageId, entries, in_place: v.file });
      const t = this.tracked.get(v.storageId);
      if (t) {
        t.users.add(containerId);
        t.fingerprint = fingerprint;
      } else this.tracked.set(v.storageId, { volume: v, fingerprint, users: new Set([containerId]) });
    }
    if (this.tracked.size && !this.timer) {
      this.timer = setInterval(() => void this.poll(), this.pollMs);
      this.timer.unref();
    }
    return out;
  }

  /** The container is gone: volumes nobody uses any more are no longer watched. */
  remove(containerId: string): void {
    for (const [id, t] of this.tracked) {
      t.users.delete(containerId);
      if (t.users.size === 0) this.tracked.delete(id);
    }
    if (this.tracked.size === 0) this.stop();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One pass: resends every volume whose fingerprint changed (exported for tests). */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      for (const t of [...this.tracked.values()]) {
        const v = t.volume;
        let fingerprint: string;
        let entries: SyncFiles["entries"];
        try {
          if (snapshotTree(v.hostPath) === t.fingerprint) continue;
          ({ fingerprint, entries } = copyTree(v.hostPath));
        } catch (e) {
          // Gone (pod being torn down) or grown past the limits: keep the last good copy.
          this.log.warn(
            { storage: v.storageId, path: v.hostPath, err: errorMessage(e) },
            "volume: cannot read the host copy",
          );
          continue;
        }
        try {
          await this.send({ storage_id: v.storageId, entries, in_place: v.file });
          t.fingerprint = fingerprint;
          this.log.info(
            { storage: v.storageId, path: v.hostPath, entries: entries.length },
            "volume: host change copied into the guest",
          );
        } catch (e) {
          if (this.tracked.get(v.storageId) === t)
            this.log.warn(
              { storage: v.storageId, err: errorMessage(e) },
              "volume: SyncFiles failed (retried next poll)",
            );
        }
      }
    } finally {
      this.polling = false;
    }
  }
}
