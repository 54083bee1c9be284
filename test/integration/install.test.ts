// The node installer image's entry point (tools/node-installer/), run as its DaemonSet runs it,
// against a scratch containerd of each supported version: the image tarball is imported into that
// containerd and started with runc (`ctr run --privileged`, the host's root at /host, host network
// and a service account pointing at a fake API server on 127.0.0.1), with `daemon` and the install
// arguments: it chroots into the host and runs `cove install` from its payload (prefix in the test
// dir, its bin dir first on containerd's PATH, the runtime block into containerd's own config) and
// labels the node. After a restart a CRI pod with handler "cove" runs on the installed shim; a
// second installer run changes nothing; the installed `cove ps` lists the pod and `cove env` the
// config and guest it uses. Then the DaemonSet's preStop hook (`cove-node-installer uninstall`, by
// `ctr tasks exec`) unlabels the node and uninstalls, SIGTERM stops the installer at once, and
// containerd's config is byte for byte what it was. One pod per version.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import type { CoveEnv } from "../../src/cli/env.ts";
import type { PodRow } from "../../src/cli/ps.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { buildInstallerImage, ENTRYPOINT, READY_FILE } from "../../tools/node-installer/image.ts";
import { NODE_LABEL } from "../../tools/node-installer/label.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { CONTAINERD_VERSIONS } from "../harness/containerd-versions.ts";
import { CriClient } from "../harness/cri.ts";
import { describeFailure, run } from "../harness/exec.ts";
import { BUSYBOX_BIN, type BuiltImage, buildImage, importImage, pauseImage } from "../harness/image.ts";
import { processesWithArg, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";
import { type FakeApiServer, startFakeApiServer } from "../unit/deploy/fake-apiserver.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "cove.cjs"), why: "the bundled CLI (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: join(CNI_BIN_DIR, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
  { path: BUSYBOX_BIN, why: "the installer image's shell (busybox-static)" },
  { path: "/usr/bin/openssl", why: "the fake API server's certificate (openssl)" },
]);
const BRIDGE = "cove-inst0";
const NODE = "cove-test-node";
const INSTALLER = "cove-node-installer";
const RESTART = `nsenter --target ${process.pid} --mount -- true`;

async function cove(args: string[], bin: string): Promise<string> {
  const r = await run(bin, args, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `cove ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** The cove shims of a containerd (the installer container's runc shim also names its address). */
const coveShims = (cd: Containerd) =>
  processesWithArg(cd.address).filter((p) => !p.argv[0]!.endsWith("containerd-shim-runc-v2"));

/** The host's /run entries the entry point stages in (it must leave none behind). */
const staged = () => readdirSync("/run").filter((n) => n.startsWith("cove-node-installer."));

describe("the node installer image on each containerd version: install, a CRI pod on handler cove, uninstall", {
  skip,
  timeout: 1_200_000,
}, () => {
  let image: BuiltImage;
  let api: FakeApiServer;
  before(async () => {
    image = await buildInstallerImage();
    api = await startFakeApiServer([NODE]);
  });
  after(async () => {
    removeBridge(BRIDGE);
    await api?.close();
  });

  for (const v of Object.values(CONTAINERD_VERSIONS)) {
    test(`containerd ${v.version} (config version ${v.configVersion})`, async () => {
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
        // What kubelet mounts into every container: the service account's token and the cluster CA.
        const sa = join(cd.dir, "serviceaccount");
        mkdirSync(sa);
        writeFileSync(join(sa, "token"), api.token);
        writeFileSync(join(sa, "ca.crt"), api.ca);
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
        await importImage(cd, image, "default", 180_000);
        const log = join(cd.dir, "installer.log");
        // As the DaemonSet runs it: privileged, the host's PID namespace and root (at /host),
        // NODE_NAME, the service account, the API server's address. The restart command enters a
        // host process's mount namespace from the chroot, as the default one does with the node's
        // init (PID 1 here is a sandbox's process that even root cannot enter), then runs `true`:
        // the test restarts the scratch containerd itself.
        const runArgs = (restart: string) => [
          "--privileged",
          "--net-host",
          "--with-ns",
          `pid:/proc/${process.pid}/ns/pid`,
          "--mount",
          "type=bind,src=/,dst=/host,options=rbind:rw",
          "--mount",
          `type=bind,src=${sa},dst=/var/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro`,
          "--env",
          `NODE_NAME=${NODE}`,
          "--env",
          `KUBERNETES_SERVICE_HOST=${api.host}`,
          "--env",
          `KUBERNETES_SERVICE_PORT=${api.port}`,
          "--env",
          "COVE_RESTART_CONTAINERD=true",
          "--env",
          `COVE_RESTART_COMMAND=${restart}`,
        ];
        await cd.ctrOk(
          [
            "run",
            "-d",
            ...runArgs(RESTART),
            "--log-uri",
            `file://${log}`,
            image.ref,
            INSTALLER,
            ENTRYPOINT,
            "daemon",
            ...args,
          ],
          { timeoutMs: 60_000 },
        );
        const installerLog = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
        await waitFor(
          "the installer to install and wait",
          async () => {
            if (installerLog().includes("installed; waiting")) return true;
            if (/ STOPPED/.test((await cd.ctr(["tasks", "ls"])).stdout)) throw new Error("the installer exited");
            return false;
          },
          120_000,
          500,
        ).catch((e: Error) => {
          throw new Error(`${e.message}; its log:\n${installerLog()}`);
        });
        const out = installerLog();
        assert.match(out, new RegExp(`cove runtime added \\(config version ${v.configVersion}`));
        assert.ok(out.includes(`containerd restarted (${RESTART})`), out);
        assert.match(out, new RegExp(`node ${NODE}: labelled ${NODE_LABEL}=true`));
        assert.deepEqual(api.nodes.get(NODE), { [NODE_LABEL]: "true" });
        assert.deepEqual(staged(), [], "the staging directory is gone from the host's /run");
        await cd.ctrOk(["tasks", "exec", "--exec-id", "ready", INSTALLER, "/bin/cat", READY_FILE]); // the readiness probe
        const installed = readFileSync(cd.configPath);
        assert.ok(installed.subarray(0, original.length).equals(original), "the original text stays as it was");
        assert.equal(existsSync(join(prefix, "bin", "node")), true);

        // A second run of the installer (kubelet restarting it) changes nothing and restarts nothing.
        const again = await cd.ctrOk(
          ["run", "--rm", ...runArgs("false"), image.ref, `${INSTALLER}-again`, ENTRYPOINT, "install", ...args],
          { timeoutMs: 120_000 },
        );
        assert.doesNotMatch(again.stdout, /restarted|written|added/, again.stdout);
        assert.ok(readFileSync(cd.configPath).equals(installed));

        await cd.restart();
        await importImage(cd, await buildImage(pauseImage(), join(cd.dir, "images")), "k8s.io");
        const pod = { metadata: { name: "installed", uid: `inst-${v.version}`, namespace: "default", attempt: 0 } };
        const id = await cri.runPodSandbox(pod, "cove");
        const st = await cri.podSandboxStatus(id);
        assert.equal(st.status.state, "SANDBOX_READY");
        assert.equal(st.status.runtime_handler, "cove");
        // The pod's shim is the installed one: the prefix's Node running the prefix's bundle.
        const shims = coveShims(cd);
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
        await waitFor("the pod's shim to go", () => coveShims(cd).length === 0, 30_000);

        // The DaemonSet's preStop hook, then the SIGTERM kubelet sends.
        const u = await cd.ctr(
          ["tasks", "exec", "--exec-id", "prestop", INSTALLER, ENTRYPOINT, "uninstall", "--prefix", prefix],
          {
            timeoutMs: 120_000,
          },
        );
        assert.equal(u.code, 0, describeFailure("the preStop hook", u));
        assert.match(u.stdout, new RegExp(`node ${NODE}: label ${NODE_LABEL} removed`));
        assert.match(u.stdout, /cove runtime removed/);
        assert.ok(u.stdout.includes(`containerd restarted (${RESTART})`), u.stdout);
        assert.deepEqual(api.nodes.get(NODE), {}, "the node is unlabelled");
        const stopAt = Date.now();
        await cd.ctrOk(["tasks", "kill", INSTALLER]);
        await waitFor(
          "the installer to stop on SIGTERM",
          async () => / STOPPED/.test((await cd.ctr(["tasks", "ls"])).stdout),
          15_000,
        );
        assert.ok(Date.now() - stopAt < 10_000, "SIGTERM stops the installer at once, not after a grace period");
        assert.match(installerLog(), /stopping/);
        await cd.ctrOk(["tasks", "delete", INSTALLER]);
        await cd.ctrOk(["containers", "delete", INSTALLER]);

        assert.ok(readFileSync(cd.configPath).equals(original), "containerd's config is byte-identical to before");
        assert.equal(existsSync(prefix), false);
        assert.equal(existsSync(join(cd.binDir, "containerd-shim-cove-v2")), false);
        assert.equal(existsSync(join(cd.binDir, "cove")), false);
        assert.equal(existsSync(coveToml), false);
        assert.deepEqual(staged(), [], "nothing of the installer is left in the host's /run");
      } finally {
        cri.close();
        await cd.stop();
      }
    });
  }
});
