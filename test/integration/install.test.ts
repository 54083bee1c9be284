// `cove install` / `cove uninstall` (bin/cove, as an operator or the node-installer image runs them)
// against a scratch containerd of each supported version: the install goes into a prefix, its bin
// dir is first on containerd's PATH, the runtime block goes into containerd's own config; after a
// restart a CRI pod with handler "cove" runs on the installed shim; a second install changes
// nothing; the installed `cove ps` lists the pod and `cove env` the config and guest it uses;
// uninstall gives back containerd's config byte for byte. One pod per version.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import type { CoveEnv } from "../../src/cli/env.ts";
import type { PodRow } from "../../src/cli/ps.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { CONTAINERD_VERSIONS } from "../harness/containerd-versions.ts";
import { CriClient } from "../harness/cri.ts";
import { run } from "../harness/exec.ts";
import { buildImage, importImage, pauseImage } from "../harness/image.ts";
import { processesWithArg, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "cove.cjs"), why: "the bundled CLI (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: join(CNI_BIN_DIR, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
]);
const BRIDGE = "cove-inst0";

async function cove(args: string[], bin = join(REPO_ROOT, "bin", "cove")): Promise<string> {
  const r = await run(bin, args, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `cove ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

describe("cove install / uninstall on each containerd version", { skip, timeout: 900_000 }, () => {
  after(() => removeBridge(BRIDGE));

  for (const v of Object.values(CONTAINERD_VERSIONS)) {
    test(`containerd ${v.version} (config version ${v.configVersion}): install, a CRI pod on handler cove, uninstall`, async () => {
      // Only runc in the scratch config and no cove shim on containerd's PATH: install adds both.
      const cd = await Containerd.start({ version: v.version, shims: {}, criRuntimes: {}, cniBinDir: CNI_BIN_DIR });
      const cri = new CriClient(cd.address);
      try {
        const conf = join(cd.dir, "cni", "conf");
        writeBridgeConflist(conf, cd.dir, { name: "cove-inst", bridge: BRIDGE, prefix: "10.231.18" });
        const original = readFileSync(cd.configPath);
        const prefix = join(cd.dir, "opt", "cove");
        const coveToml = join(cd.dir, "etc", "cove", "cove.toml");
        mkdirSync(join(cd.dir, "cache"));
        const args = [
          "--prefix",
          prefix,
          "--bin-dir",
          cd.binDir,
          "--config",
          coveToml,
          "--cache-dir",
          join(cd.dir, "cache"),
          "--containerd-config",
          cd.configPath,
          "--containerd-version",
          v.version,
        ];
        const out = await cove(["install", ...args, "--restart-command", "true"]);
        assert.match(out, new RegExp(`cove runtime added \\(config version ${v.configVersion}`));
        assert.match(out, /containerd restarted/);
        const installed = readFileSync(cd.configPath);
        assert.ok(installed.subarray(0, original.length).equals(original), "the original text stays as it was");
        assert.equal(existsSync(join(prefix, "bin", "node")), true);

        // A second install changes nothing (and so restarts nothing).
        const again = await cove(["install", ...args, "--restart-command", "false"]);
        assert.doesNotMatch(again, /restarted|written|added/, again);
        assert.ok(readFileSync(cd.configPath).equals(installed));

        await cd.restart();
        await importImage(cd, await buildImage(pauseImage(), join(cd.dir, "images")), "k8s.io");
        const pod = { metadata: { name: "installed", uid: `inst-${v.version}`, namespace: "default", attempt: 0 } };
        const id = await cri.runPodSandbox(pod, "cove");
        const st = await cri.podSandboxStatus(id);
        assert.equal(st.status.state, "SANDBOX_READY");
        assert.equal(st.status.runtime_handler, "cove");
        // The pod's shim is the installed one: the prefix's Node running the prefix's bundle.
        const shims = processesWithArg(cd.address);
        assert.equal(shims.length, 1, `one shim: ${shims.map((p) => p.argv.join(" ")).join("\n")}`);
        assert.equal(shims[0]!.argv[0], join(prefix, "bin", "node"));
        assert.equal(resolve(shims[0]!.argv[1]!), join(prefix, "dist", "containerd-shim-cove-v2.cjs"));
        // The installed cove: `cove ps` finds the pod from the shim's run state; `cove env` reads the
        // config containerd's runtime names and the guest in the prefix.
        const installedCove = join(cd.binDir, "cove");
        const rows = JSON.parse(await cove(["ps", "--json"], installedCove)) as PodRow[];
        const row = rows.find((r) => r.id === id);
        assert.ok(row, `cove ps lists the pod: ${JSON.stringify(rows)}`);
        assert.equal(row.namespace, "k8s.io");
        assert.equal(row.shimPid, shims[0]!.pid);
        assert.equal(row.alive, true);
        assert.ok(existsSync(`/proc/${row.vmmPid}`), "the VMM pid is a live process");
        assert.deepEqual(row.containers, [id], "the sandbox container");
        assert.ok((row.hostPssKib ?? 0) > 10 * 1024, `host PSS ${row.hostPssKib} KiB`);
        const env = JSON.parse(
          await cove(["env", "--json", "--containerd-config", cd.configPath], installedCove),
        ) as CoveEnv;
        assert.equal(env.config.file, coveToml);
        assert.equal(env.guest.image.path, join(prefix, "share", "guest", "rootfs.erofs"));
        assert.equal(
          "kind" in env.backend && `${env.backend.kind}/${env.backend.accel}`,
          `${row.backend}/${row.accel}`,
        );
        const table = await cove(["ps"], installedCove);
        assert.match(table, new RegExp(`^${id.slice(0, 12)} +k8s\\.io +${row.vmmPid} `, "m"));
        await cri.stopPodSandbox(id);
        await cri.removePodSandbox(id);
        await waitFor("the pod's shim to go", () => processesWithArg(cd.address).length === 0, 30_000);

        const u = await cove(["uninstall", "--prefix", prefix]);
        assert.match(u, /cove runtime removed/);
        assert.ok(readFileSync(cd.configPath).equals(original), "containerd's config is byte-identical to before");
        assert.equal(existsSync(prefix), false);
        assert.equal(existsSync(join(cd.binDir, "containerd-shim-cove-v2")), false);
        assert.equal(existsSync(coveToml), false);
      } finally {
        cri.close();
        await cd.stop();
      }
    });
  }
});
