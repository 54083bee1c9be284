// The guest image layout: Node, the agent as PID 1, an OCI runtime, a minimal /etc, mount points.
// The layout is data (a RootPlan); its key (every entry plus the bytes of every copied file) names
// the cached image, so a changed agent bundle, Node, runtime or layout makes a new image.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { dpkgVersion, which } from "../common/exec.ts";
import { HOLDER_FILE } from "../native/process.ts";
import { GUEST_BUSYBOX } from "./busybox.ts";
import { pinnedNode } from "./node-pin.ts";
import { binaryWithLibraries, dedupe, planKey, type RootPlan, usrMergedSkeleton } from "./rootfs.ts";

/** Where the agent lives in the guest (the native addon sits beside it: src/native/load.ts looks there). */
export const GUEST_AGENT_DIR = "/opt/cove";
export const GUEST_AGENT = `${GUEST_AGENT_DIR}/agent.cjs`;
export const GUEST_NODE = "/usr/bin/node";
/** The kernel runs this as PID 1 (`init=/init`): a shebang script, so no arguments go after `--`. */
export const GUEST_INIT = "/init";

/** Bump when the layout changes in a way the plan does not show (e.g. the erofs options). */
const LAYOUT_VERSION = 1;

export interface ImageInputs {
  /** The pinned Node's binary (deploy/nodejs.env), never the host's PATH. */
  node: string;
  /** The OCI runtime copied in: the crun built for the guest (crun.ts), else the host's crun or runc. */
  runtime: { name: "crun" | "runc"; path: string; version?: string };
  agentBundle: string;
  addon: string;
  /** The static busybox (busybox.ts), copied to GUEST_BUSYBOX. */
  busybox: string;
}

/** Finds the host binaries the image needs; throws naming the package to install. */
export function findImageInputs(
  agentBundle: string,
  addon: string,
  nodePin: string,
  built: ImageInputs["runtime"] | undefined,
  busybox: string,
): ImageInputs {
  const node = pinnedNode(nodePin).path;
  const crun = which("crun", "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin");
  const runc = which("runc", "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin");
  const runtime = built
    ? built
    : crun
      ? { name: "crun" as const, path: crun }
      : runc
        ? { name: "runc" as const, path: runc }
        : undefined;
  if (!runtime) throw new Error("no OCI runtime for the guest: apt-get install crun (or runc)");
  if (!existsSync(agentBundle)) throw new Error(`agent bundle ${agentBundle} missing: run \`npm run build\``);
  if (!existsSync(addon)) throw new Error(`native addon ${addon} missing: run \`npx node-gyp rebuild\``);
  if (!existsSync(busybox)) throw new Error(`static busybox ${busybox} missing: run \`npm run guest\``);
  if (!existsSync(holderBeside(addon)))
    throw new Error(`namespace holder ${holderBeside(addon)} missing: run \`npx node-gyp rebuild\``);
  return { node, runtime, agentBundle, addon, busybox };
}

/** The holder's program, built beside the addon (binding.gyp). */
const holderBeside = (addon: string) => join(dirname(addon), HOLDER_FILE);

const ETC: Record<string, string> = {
  "/etc/passwd": "root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n",
  "/etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
  "/etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
  // Placeholder: the guest's own name resolution is not used yet; containers get theirs from the spec.
  "/etc/resolv.conf": "",
  "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
  "/etc/os-release": 'NAME="cove guest"\nID=cove-guest\n',
  "/etc/hostname": "cove-guest\n",
};

/** Directories the agent mounts on or writes into (the image itself is read-only). */
const MOUNT_POINTS = ["/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/root", "/var"];

export function imagePlan(inp: ImageInputs): RootPlan {
  const plan: RootPlan = [...usrMergedSkeleton()];
  for (const d of MOUNT_POINTS) plan.push({ kind: "dir", path: d, mode: d === "/tmp" ? 0o1777 : 0o755 });
  plan.push({ kind: "symlink", path: "/var/run", target: "../run" });
  plan.push({ kind: "symlink", path: "/var/tmp", target: "../tmp" });
  plan.push({ kind: "dir", path: "/etc", mode: 0o755 });
  for (const [path, content] of Object.entries(ETC)) plan.push({ kind: "content", path, content, mode: 0o644 });
  plan.push({ kind: "symlink", path: "/etc/mtab", target: "../proc/self/mounts" });
  plan.push(...binaryWithLibraries(inp.node, GUEST_NODE));
  plan.push(...binaryWithLibraries(inp.runtime.path, `/usr/bin/${inp.runtime.name}`));
  plan.push({ kind: "file", path: GUEST_BUSYBOX, from: inp.busybox, mode: 0o755 });
  plan.push({ kind: "dir", path: GUEST_AGENT_DIR, mode: 0o755 });
  plan.push({ kind: "file", path: GUEST_AGENT, from: inp.agentBundle, mode: 0o644 });
  plan.push(...binaryWithLibraries(inp.addon, `${GUEST_AGENT_DIR}/cove_native.node`));
  // The pod namespace holder's static program, beside the addon (where process.ts looks for it).
  plan.push({ kind: "file", path: `${GUEST_AGENT_DIR}/${HOLDER_FILE}`, from: holderBeside(inp.addon), mode: 0o755 });
  plan.push({
    kind: "content",
    path: GUEST_INIT,
    content: `#!${GUEST_NODE}\nrequire(${JSON.stringify(GUEST_AGENT)});\n`,
    mode: 0o755,
  });
  return dedupe(plan);
}

/** The image's cache key: layout, file contents, and the Debian versions of what built it. */
export function imageKey(plan: RootPlan, inp: ImageInputs): string {
  return planKey([
    ...plan,
    {
      kind: "content",
      path: "/.cove-build-inputs",
      content: JSON.stringify({
        layout: LAYOUT_VERSION,
        runtime: `${inp.runtime.name} ${inp.runtime.version ?? dpkgVersion(inp.runtime.name) ?? "?"}`,
        erofsUtils: dpkgVersion("erofs-utils") ?? null,
        libc6: dpkgVersion("libc6") ?? null,
      }),
      mode: 0o644,
    },
  ]);
}
