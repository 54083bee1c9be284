// A small test guest root for the virtio integration tests: busybox + socat (VSOCK-LISTEN /
// VSOCK-CONNECT) with their libraries and a shell /init, as an erofs image. Uses the guest
// image helpers from src/guest/rootfs.ts.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  binaryWithLibraries,
  makeErofs,
  materialize,
  type RootPlan,
  usrMergedSkeleton,
} from "../../src/guest/rootfs.ts";

/** The guest's command port: `sh` reads commands from the stream, output (and stderr) comes back. */
export const CMD_PORT = 2000;
/** Echo server port (socat EXEC:cat per connection). */
export const ECHO_PORT = 1234;

const init = (extra: string) => `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
socat -t 600 VSOCK-LISTEN:${ECHO_PORT},fork,reuseaddr,backlog=128 EXEC:cat &
socat -t 600 VSOCK-LISTEN:${CMD_PORT},fork,reuseaddr,backlog=128 EXEC:/bin/sh,stderr &
${extra}
echo COVE-TEST-GUEST-READY
exec sleep 100000
`;

export interface TestRootOptions {
  /** Host files copied into the image (e.g. a static benchmark tool), as path in guest → host path. */
  files?: Record<string, string>;
  /** Shell lines /init runs (in the background if they serve) before it says it is ready. */
  initLines?: string[];
}

/** Builds the image; returns its path and a cleanup function. */
export function buildTestRoot(opts: TestRootOptions = {}): { image: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "cove-testroot-"));
  const root = join(dir, "root");
  const plan: RootPlan = [
    ...usrMergedSkeleton(),
    ...binaryWithLibraries("/bin/busybox", "/usr/bin/busybox"),
    ...binaryWithLibraries("/usr/bin/socat", "/usr/bin/socat"),
    ...execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" })
      .split("\n")
      .filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox" && a !== "socat")
      .map((a) => ({ kind: "symlink" as const, path: `/usr/bin/${a}`, target: "busybox" })),
    ...Object.entries(opts.files ?? {}).map(([path, from]) => ({ kind: "file" as const, path, from, mode: 0o755 })),
    { kind: "content", path: "/init", content: init((opts.initLines ?? []).join("\n")), mode: 0o755 },
    { kind: "dir", path: "/proc", mode: 0o755 },
    { kind: "dir", path: "/sys", mode: 0o755 },
    { kind: "dir", path: "/dev", mode: 0o755 },
    { kind: "dir", path: "/tmp", mode: 0o1777 },
  ];
  materialize(plan, root);
  const image = join(dir, "root.erofs");
  makeErofs(root, image);
  return { image, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
