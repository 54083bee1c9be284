// Proves the containerd harness with containerd's own runc shim, independent of cove: a scratch
// containerd serves, images built here import and run (`ctr run` and a whole CRI pod), and stop()
// leaves nothing behind. Once per tested containerd version (1.6 on config version 2, 1.7 on 2,
// 2.x on 3): the CRI pod proves each config's runtime table and pinned pause image are read.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Containerd } from "../harness/containerd.ts";
import { CONTAINERD_VERSIONS, DEFAULT_CONTAINERD } from "../harness/containerd-versions.ts";
import { CriClient, hostNetworkPod } from "../harness/cri.ts";
import {
  BUSYBOX_IMAGE_REF,
  buildImage,
  busyboxImage,
  importImage,
  PAUSE_IMAGE_REF,
  pauseImage,
} from "../harness/image.ts";
import { filesUnder, mountsUnder, processesWithArg, shimSockets } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const skip = requireIntegration();

for (const version of Object.keys(CONTAINERD_VERSIONS)) describeHarness(version);

function describeHarness(version: string) {
  describe(`containerd ${version} harness (with the runc shim)`, { skip, timeout: 180_000 }, () => {
    let cd: Containerd;
    let cri: CriClient | undefined;

    before(async () => {
      cd = await Containerd.start({ version });
      const cache = join(cd.dir, "images");
      await importImage(cd, await buildImage(busyboxImage(), cache));
      await importImage(cd, await buildImage(busyboxImage(), cache), "k8s.io");
      await importImage(cd, await buildImage(pauseImage(), cache), "k8s.io");
    });

    after(async () => {
      cri?.close();
      await cd?.stop();
    });

    test("the containerd that serves is the one asked for", async () => {
      const r = await cd.ctrOk(["version"]);
      assert.match(r.stdout, new RegExp(`Server:[\\s\\S]*Version:\\s+v?${version.replace(/\./g, "\\.")}`));
    });

    test("imported images are listed by their names", async () => {
      const r = await cd.ctrOk(["images", "ls", "-q"]);
      assert.match(r.stdout, /docker\.io\/library\/bb:latest/);
      const k = await cd.ctrOk(["images", "ls", "-q"], { namespace: "k8s.io" });
      assert.match(k.stdout, /registry\.k8s\.io\/pause:3\.6/);
    });

    test("ctr run --rm with runc prints the command's output and leaves no bundle", async () => {
      const r = await cd.ctrOk(["run", "--rm", BUSYBOX_IMAGE_REF, "h1", "/bin/sh", "-c", "echo hi; echo $PATH"]);
      assert.equal(r.stdout, "hi\n/bin\n");
      assert.equal(existsSync(cd.bundleDir("h1")), false, "bundle dir removed after --rm");
      assert.deepEqual(mountsUnder(cd.bundleDir("h1")), []);
      assert.equal(existsSync(cd.shimSocketPath("h1")), false, "runc shim removed its socket");
      const tasks = await cd.ctrOk(["tasks", "ls", "-q"]);
      assert.equal(tasks.stdout.trim(), "");
    });

    test("a failing command's exit status reaches ctr", async () => {
      const r = await cd.ctr(["run", "--rm", BUSYBOX_IMAGE_REF, "h2", "/bin/sh", "-c", "exit 7"]);
      assert.equal(r.code, 7, `ctr exit code; stderr: ${r.stderr}`);
    });

    test("CRI: Version, and a host-network pod with runc runs, execs and stops", async () => {
      cri = new CriClient(cd.address);
      const v = await cri.version();
      assert.equal(v.runtime_name, "containerd");
      assert.equal(v.runtime_api_version, "v1");
      assert.ok(v.runtime_version.replace(/^v/, "").startsWith(version), `runtime_version ${v.runtime_version}`);

      const images = await cri.listImages();
      assert.ok(
        images.images.some((i) => i.repo_tags.includes(PAUSE_IMAGE_REF)),
        "pause image visible to CRI",
      );

      const podConfig = hostNetworkPod("harness-pod", { annotations: { "cove.io/probe": "1" } });
      const pod = await cri.runPodSandbox(podConfig, "runc");
      try {
        const ctr = await cri.createContainer(
          pod,
          { metadata: { name: "c1" }, image: { image: BUSYBOX_IMAGE_REF }, command: ["/bin/sleep", "1000"] },
          podConfig,
        );
        await cri.startContainer(ctr);
        const listed = await cri.listContainers({ pod_sandbox_id: pod });
        assert.equal(listed.length, 1);
        assert.equal(listed[0]!.state, "CONTAINER_RUNNING");

        const ex = await cri.execSync(ctr, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], 10);
        assert.equal(ex.exit_code, 3);
        assert.equal(ex.stdout.toString(), "out\n");
        assert.equal(ex.stderr.toString(), "err\n");

        const stats = await cri.containerStats(ctr);
        assert.ok(stats.stats.attributes, "ContainerStats carries attributes");

        await cri.stopContainer(ctr, 0);
        assert.equal((await cri.containerStatus(ctr)).status.state, "CONTAINER_EXITED");
        await cri.removeContainer(ctr);
      } finally {
        await cri.stopPodSandbox(pod);
        await cri.removePodSandbox(pod);
      }
      assert.equal(existsSync(cd.bundleDir(pod, "k8s.io")), false, "sandbox bundle removed");
    });

    test("stop() removes the daemon, its shims, mounts and temp dir; restart() in between works", {
      skip: version === DEFAULT_CONTAINERD ? false : "the harness's own cleanup: once, on the default version",
    }, async () => {
      const other = await Containerd.start({ version });
      let stopped = false;
      try {
        await importImage(other, await buildImage(busyboxImage(), join(cd.dir, "images")));
        await other.ctrOk(["run", "-d", BUSYBOX_IMAGE_REF, "bg", "/bin/sleep", "1000"]);
        const sock = other.shimSocketPath("bg");
        assert.ok(shimSockets().includes(sock), "runc shim socket exists while the task runs");
        await other.restart();
        const ps = await other.ctrOk(["tasks", "ls"]);
        assert.match(ps.stdout, /bg\s+\d+\s+RUNNING/, "task survives a containerd restart");
        assert.ok(processesWithArg(other.address).length > 0, "shim process running");

        await other.stop();
        stopped = true;
        assert.equal(existsSync(other.dir), false, "temp dir removed");
        assert.deepEqual(processesWithArg(other.address), [], "no process mentions the containerd socket");
        assert.equal(existsSync(sock), false, "shim socket removed");
        assert.deepEqual(mountsUnder(other.dir), []);
        assert.deepEqual(filesUnder(other.dir), []);
      } finally {
        if (!stopped) await other.stop();
      }
    });
  });
}
