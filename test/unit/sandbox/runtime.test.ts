// The sandbox runtime's own logic on a fake hypervisor whose VMs run a fake agent (fake-pod.ts): no
// QEMU, KVM, containerd or root. Task RPCs on guest containers and on the CRI sandbox container, a
// VM that dies under running processes, OOM events, and a failure injected at each step of the pod
// boot in turn, after which nothing the boot acquired may still be held.
import assert from "node:assert/strict";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { pino } from "pino";
import { CoveError, errorMessage } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { registerBackend, unregisterBackend } from "../../../src/hypervisor/select.ts";
import { Rollback } from "../../../src/sandbox/rollback.ts";
import { OOM_POLL_MIN_MS, SandboxRuntime, VM_GONE_STATUS } from "../../../src/sandbox/sandbox.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";
import { createSpec, type FakeHypervisor, fakeHost, RecordedEvents, writeBundle } from "./fake-pod.ts";

const logger = pino({ level: "silent" });
const NETNS = "/var/run/netns/cni-fake";

let host: ReturnType<typeof fakeHost>;
let hv: FakeHypervisor;

beforeEach(() => {
  host = fakeHost();
  hv = host.hypervisor;
  registerBackend("embedded", () => hv);
});

afterEach(() => {
  unregisterBackend("embedded");
  host.cleanup();
});

function runtime(): { rt: SandboxRuntime; events: RecordedEvents } {
  const rt = new SandboxRuntime({ logger, configPath: host.configPath, deps: host.deps });
  const events = new RecordedEvents();
  rt.setEvents(events);
  return { rt, events };
}

function isCode(code: number, re?: RegExp) {
  return (e: unknown) => grpcStatus(e).code === code && (!re || re.test(errorMessage(e)));
}

/** The VM work dirs under the run dir. */
function workDirs(): string[] {
  return existsSync(host.runDir) ? readdirSync(host.runDir) : [];
}

test("a CRI pod: sandbox container is the VM, a guest container runs create/start/exec/kill/delete on the agent", async () => {
  const { rt, events } = runtime();
  const sb = writeBundle(host.dir, "sb", { sandbox: true, netns: NETNS, hostname: "pod-a" });
  const { pid: sbPid } = await rt.create(createSpec(sb));
  const vm = hv.vms[0]!;
  assert.equal(sbPid, vm.pid, "the sandbox container's pid is the VMM's");
  assert.equal(host.networks.held, 1);
  assert.equal(vm.config.nets?.length, 1, "one NIC per pod interface");
  assert.match(vm.config.cmdline, /cove\.hostname=pod-a/);
  // root, then the two disks of extents, empty: the sandbox container brings no disks.
  assert.deepEqual(
    vm.config.disks.map((d) => [d.id, d.extents ?? false]),
    [
      ["root", false],
      ["layers", true],
      ["writable", true],
    ],
  );
  assert.equal(vm.extents.size, 0);
  assert.deepEqual(
    vm.agent.calls.filter((c) => c !== "Check" && c !== "GetOOMEvent"),
    ["CreateSandbox", "ConfigureNetwork"],
  );
  assert.equal(workDirs().length, 1);
  assert.deepEqual(await rt.start("sb", ""), { pid: vm.pid });

  const ctr = writeBundle(host.dir, "c1", { netns: NETNS });
  const { pid } = await rt.create(createSpec(ctr));
  assert.ok(vm.agent.containers.has("c1"));
  assert.equal(pid, vm.agent.containers.get("c1")!.get("")!.pid);
  assert.equal(vm.extents.get("layers")?.size, 2, "two layer images added as extents");
  assert.equal(vm.extents.get("writable")?.size, 1, "and the writable layer");
  const storages = (vm.agent.creates.at(-1)?.storages ?? []) as { source: string }[];
  assert.deepEqual(
    storages.map((s) => s.source.replace(/:\d+:\d+$/, "")),
    ["extent:cove-layers:1", "extent:cove-layers:2", "extent:cove-writable:1"],
    "the agent is told where each extent is",
  );
  const upper = join(ctr.bundle, "work", "cove-upper.ext4");
  assert.ok(existsSync(upper));

  assert.deepEqual(await rt.start("c1", ""), { pid });
  await rt.exec("c1", "e1", { process: { args: ["sh"] }, stdin: "", stdout: "", stderr: "", terminal: false });
  const { pid: execPid } = await rt.start("c1", "e1");
  assert.notEqual(execPid, pid);
  assert.deepEqual((await rt.pids("c1")).map((p) => p.pid).sort(), [pid, execPid].sort());
  await rt.pause("c1");
  await rt.resume("c1");
  await rt.update("c1", { cpu: { shares: 2 } });
  await rt.resizePty({ id: "c1", execId: "e1", width: 80, height: 24 });
  assert.deepEqual(
    vm.agent.resizes.map((r) => [r.container_id, r.exec_id, r.rows, r.cols]),
    [["c1", "e1", 24, 80]],
    "a terminal's height is its rows, its width its columns",
  );
  await rt.closeIO("c1", "e1", true);
  const stats = await rt.stats("c1");
  assert.equal(stats.type_url, "io.containerd.cgroups.v2.Metrics");
  assert.ok(stats.value.length > 0);

  await rt.kill("c1", "e1", 9, false);
  await events.until(() => events.exits.some((e) => e.execId === "e1"));
  const e1 = events.exits.find((e) => e.execId === "e1")!;
  assert.equal(e1.status, 137);
  assert.equal(e1.at.getTime(), 1_700_000_000_005, "the agent's exit time is reported");
  await rt.delete("c1", "e1");
  assert.ok(!vm.agent.containers.get("c1")!.has("e1"), "DeleteProcess reached the agent");

  await rt.kill("c1", "", 15, false);
  await events.until(() => events.exits.some((e) => e.id === "c1" && e.execId === ""));
  await rt.delete("c1", "");
  assert.ok(!vm.agent.containers.has("c1"), "RemoveContainer reached the agent");
  assert.ok(!existsSync(upper), "the writable layer is removed");
  assert.deepEqual([vm.extents.get("layers")?.size, vm.extents.get("writable")?.size], [0, 0], "extents removed");
  await assert.rejects(rt.start("c1", ""), isCode(Code.NOT_FOUND));

  // The sandbox container: no execs, nothing on the agent for pause/stats, a synthesised exit.
  await assert.rejects(
    rt.exec("sb", "x", { process: {}, stdin: "", stdout: "", stderr: "", terminal: false }),
    isCode(Code.FAILED_PRECONDITION, /pod sandbox/),
  );
  const before = vm.agent.calls.length;
  await rt.pause("sb");
  await rt.resume("sb");
  await rt.update("sb", {});
  await rt.closeIO("sb", "", true);
  assert.deepEqual(await rt.pids("sb"), [{ pid: vm.pid }]);
  assert.equal((await rt.stats("sb")).value.length, 0);
  assert.equal(vm.agent.calls.length, before, "no agent call for the sandbox container");
  await rt.kill("sb", "", 15, false);
  assert.deepEqual(
    events.exits.filter((e) => e.id === "sb").map((e) => e.status),
    [128 + 15],
  );
  assert.ok(vm.running, "killing the sandbox container leaves the VM running");
  await assert.rejects(rt.kill("sb", "", 9, false), isCode(Code.NOT_FOUND, /already finished/));

  await rt.delete("sb", "");
  assert.ok(vm.killed, "deleting the sandbox container stops the VM");
  assert.ok(vm.agent.calls.includes("DestroySandbox"));
  assert.equal(host.networks.held, 0, "the pod network is detached");
  assert.deepEqual(workDirs(), [], "the VM's work dir is removed");
  await rt.shutdown();
});

test("ctr run: the first container's files are extents of the pod's two disks; a fresh netns gets no network", async () => {
  const { rt } = runtime();
  const b = writeBundle(host.dir, "t1");
  const { pid } = await rt.create(createSpec(b));
  const vm = hv.vms[0]!;
  assert.equal(host.networks.attached, 0);
  assert.equal(vm.config.nets, undefined);
  assert.equal(vm.config.disks.length, 3, "the guest image and the two disks of extents, whatever the container");
  assert.equal(vm.extents.get("layers")?.size, 2, "two layer images on the layer disk");
  assert.equal(vm.extents.get("writable")?.size, 1, "the writable layer on the writable disk");
  assert.equal(pid, vm.agent.containers.get("t1")!.get("")!.pid);
  await rt.start("t1", "");
  await rt.delete("t1", "");
  assert.equal(vm.extents.get("layers")?.size, 0, "extents nobody uses are removed");
  assert.equal(vm.extents.get("writable")?.size, 0);
  assert.ok(!existsSync(join(b.bundle, "work", "cove-upper.ext4")));
  assert.ok(vm.running, "only the sandbox container's delete or shutdown stops the VM");
  await rt.shutdown();
  assert.ok(vm.killed);
  assert.deepEqual(workDirs(), []);
});

test("a VM that dies mid-call: every live process exits once with 255; later calls say UNAVAILABLE", async () => {
  const { rt, events } = runtime();
  const sb = writeBundle(host.dir, "sb", { sandbox: true, netns: NETNS });
  await rt.create(createSpec(sb));
  await rt.start("sb", "");
  const c = writeBundle(host.dir, "c1", { netns: NETNS });
  await rt.create(createSpec(c));
  await rt.start("c1", "");
  await rt.exec("c1", "e1", { process: { args: ["sh"] }, stdin: "", stdout: "", stderr: "", terminal: false });
  await rt.start("c1", "e1");
  const vm = hv.vms[0]!;
  // WaitProcess of both processes is in flight on the agent when the VM goes.
  await events.until(() => vm.agent.calls.filter((x) => x === "WaitProcess").length === 2);
  vm.die(1);
  await events.until(() => events.exits.length === 3);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    events.exits.map((e) => `${e.id}/${e.execId}=${e.status}`).sort(),
    [`c1/=${VM_GONE_STATUS}`, `c1/e1=${VM_GONE_STATUS}`, `sb/=${VM_GONE_STATUS}`],
    "each process reported once",
  );
  await assert.rejects(rt.pids("c1"), isCode(Code.UNAVAILABLE, /exited/));
  await assert.rejects(rt.kill("c1", "", 9, false), isCode(Code.UNAVAILABLE));
  await rt.delete("c1", "");
  assert.ok(!existsSync(join(c.bundle, "work", "cove-upper.ext4")), "files go even without the agent");
  await rt.delete("sb", "");
  assert.equal(host.networks.held, 0);
  assert.deepEqual(workDirs(), []);
  await rt.shutdown();
});

test("the VM dies while the shim removes a container: the container is forgotten, so Shutdown ends the shim", async () => {
  const { rt, events } = runtime();
  const sb = writeBundle(host.dir, "sb", { sandbox: true, netns: NETNS });
  await rt.create(createSpec(sb));
  await rt.start("sb", "");
  const c = writeBundle(host.dir, "c1", { netns: NETNS });
  await rt.create(createSpec(c));
  await rt.start("c1", "");
  const vm = hv.vms[0]!;
  await rt.kill("c1", "", 9, false);
  await events.until(() => events.exits.some((e) => e.id === "c1"));
  vm.agent.hang.add("RemoveContainer");
  const removing = rt.delete("c1", "");
  await events.until(() => vm.agent.calls.includes("RemoveContainer"));
  vm.die(1); // SIGKILLed while the shim waits for the agent
  await removing; // the container is gone with its VM: not an error containerd would retry for
  assert.ok(!existsSync(join(c.bundle, "work", "cove-upper.ext4")), "its files are removed");
  await rt.delete("sb", "");
  // The table is empty: the task service's Shutdown lets the shim exit (it kept it alive before).
  assert.deepEqual(workDirs(), []);
  await rt.shutdown();
});

/** A CRI pod with one guest container running its init and an exec; the agent answers in 200 ms or never. */
async function podWithSilentAgentFor(method: string) {
  host.deps.agent = { deadlines: { SignalProcess: 200, DeleteProcess: 200, RemoveContainer: 200 } };
  const { rt, events } = runtime();
  const sb = writeBundle(host.dir, "sb", { sandbox: true, netns: NETNS });
  await rt.create(createSpec(sb));
  await rt.start("sb", "");
  const c = writeBundle(host.dir, "c1", { netns: NETNS });
  await rt.create(createSpec(c));
  await rt.start("c1", "");
  await rt.exec("c1", "e1", { process: { args: ["sh"] }, stdin: "", stdout: "", stderr: "", terminal: false });
  await rt.start("c1", "e1");
  const vm = hv.vms[0]!;
  vm.agent.hang.add(method);
  return { rt, events, vm, c };
}

const ALL_GONE = [`c1/=${VM_GONE_STATUS}`, `c1/e1=${VM_GONE_STATUS}`, `sb/=${VM_GONE_STATUS}`];
assert.equal(VM_GONE_STATUS, 255);

for (const [rpc, method] of [
  ["Kill", "SignalProcess"],
  ["Delete", "RemoveContainer"],
  ["Delete of an exec", "DeleteProcess"],
] as const) {
  test(`a silent agent: ${rpc} stops the pod VM after its deadline, every process exits once, disks are freed`, async () => {
    const { rt, events, vm, c } = await podWithSilentAgentFor(method);
    try {
      // containerd deletes an exec once it has exited.
      if (method === "DeleteProcess") {
        vm.agent.exit("c1", "e1", 0);
        await events.until(() => events.exits.length === 1);
      }
      const t0 = Date.now();
      if (method === "SignalProcess") await rt.kill("c1", "", 9, false);
      else if (method === "DeleteProcess") await rt.delete("c1", "e1");
      else await rt.delete("c1", "");
      const took = Date.now() - t0;
      assert.ok(took >= 200 && took < 3000, `${rpc} answered after ${took} ms`);
      assert.ok(vm.killed, "the VM was stopped");
      await events.until(() => events.exits.length === 3);
      const gone = method === "DeleteProcess" ? ["c1/=255", "c1/e1=0", "sb/=255"] : ALL_GONE;
      assert.deepEqual(events.exits.map((e) => `${e.id}/${e.execId}=${e.status}`).sort(), gone);
      // Everything after it answers at once, without the agent.
      await rt.delete("c1", "e1");
      await rt.delete("c1", "");
      assert.ok(!existsSync(join(c.bundle, "work", "cove-upper.ext4")), "the container's disks are freed");
      await rt.delete("sb", "");
      assert.equal(host.networks.held, 0);
      assert.deepEqual(workDirs(), []);
      assert.equal(events.exits.length, 3, "no process exited twice");
    } finally {
      await rt.shutdown(); // a failed assertion must not leave the fake VM's sockets open
    }
  });
}

test("the guest's console in a boot error reaches containerd bounded, with its control characters escaped", async () => {
  hv.onAgent = (a) => {
    a.silent = true;
  };
  writeFileSync(host.configPath, `cache_dir = "${host.dir}"\nhypervisor = "embedded"\n[pod]\nboot_timeout_ms = 1000\n`);
  const { rt } = runtime();
  const booting = rt.create(createSpec(writeBundle(host.dir, "t1"))).then(
    () => assert.fail("the boot succeeded"),
    (e: unknown) => e,
  );
  await new Promise((r) => setTimeout(r, 200));
  hv.vms[0]!.console.write(`\x1b]0;owned\x07\x1b[2J${"\r\u202e".repeat(50_000)}last words\n`);
  const e = await booting;
  assert.ok(e instanceof CoveError && grpcStatus(e).code === Code.DEADLINE_EXCEEDED, String(e));
  assert.ok(e.message.length < 2700, `an error of ${e.message.length} characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: none may be left.
  assert.doesNotMatch(e.message, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/);
  assert.match(e.message, /\\x0d\\u202elast words\n$/);
  await rt.shutdown();
});

test("an agent that answers the OOM poll at once, forever, gets at most one poll per OOM_POLL_MIN_MS", async () => {
  hv.onAgent = (a) => {
    for (let i = 0; i < 100_000; i++) a.pendingOoms.push("t1");
  };
  const { rt } = runtime();
  await rt.create(createSpec(writeBundle(host.dir, "t1")));
  try {
    const agent = hv.vms[0]!.agent;
    const polls = () => agent.calls.filter((c) => c === "GetOOMEvent").length;
    const p0 = polls();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 500));
    const n = polls() - p0;
    const bound = Math.ceil((Date.now() - t0) / OOM_POLL_MIN_MS) + 1;
    assert.ok(n >= 5 && n <= bound, `${n} polls in ${Date.now() - t0} ms (bound ${bound})`);
  } finally {
    await rt.shutdown();
  }
});

test("an OOM kill the agent reports reaches containerd for a known container only", async () => {
  const { rt, events } = runtime();
  const b = writeBundle(host.dir, "t1");
  await rt.create(createSpec(b));
  const vm = hv.vms[0]!;
  vm.agent.oom("nobody");
  vm.agent.oom("t1");
  await events.until(() => events.ooms.length > 0);
  assert.deepEqual(events.ooms, ["t1"]);
  await rt.shutdown();
});

/** One step of the pod boot made to fail, with the error it must surface. */
interface Fault {
  step: string;
  inject: () => void;
  code: number;
  /** What the boot had acquired when the fault hit (checked released afterwards). */
  got: { network?: boolean; writable?: boolean; vm?: boolean };
}

const faults: Fault[] = [
  {
    step: "preflight: guest kernel missing",
    inject: () => writeFileSync(host.configPath, `cache_dir = "${join(host.dir, "none")}"\n`),
    code: Code.FAILED_PRECONDITION,
    got: {},
  },
  {
    step: "network attach",
    inject: () => {
      host.networks.failAttach = new TtrpcError(Code.UNAVAILABLE, "attach failed");
    },
    code: Code.UNAVAILABLE,
    got: {},
  },
  {
    step: "the pod's devices do not fit beside the NICs",
    inject: () => {
      hv.maxDevices = 4; // root, the two disks and vsock: no place left for the NIC
    },
    code: Code.RESOURCE_EXHAUSTED,
    got: { network: true },
  },
  {
    step: "layer image conversion",
    inject: () => {
      host.disks.failLayer = new Error("mkfs.erofs failed");
    },
    code: -1,
    got: { network: true },
  },
  {
    step: "writable layer",
    inject: () => {
      host.disks.failWritable = new Error("mkfs.ext4 failed");
    },
    code: -1,
    got: { network: true },
  },
  {
    step: "VM start",
    inject: () => {
      hv.failStart = new Error("no KVM today");
    },
    code: Code.UNAVAILABLE,
    got: { network: true, writable: true },
  },
  {
    step: "VM exits before the agent answers",
    inject: () => {
      hv.dieAtBoot = true;
    },
    code: Code.UNAVAILABLE,
    got: { network: true, writable: true, vm: true },
  },
  {
    step: "the agent never answers",
    inject: () => {
      hv.onAgent = (a) => {
        a.silent = true;
      };
      writeFileSync(
        host.configPath,
        `cache_dir = "${host.dir}"\nhypervisor = "embedded"\n[pod]\nboot_timeout_ms = 1000\n`,
      );
    },
    code: Code.DEADLINE_EXCEEDED,
    got: { network: true, writable: true, vm: true },
  },
  {
    step: "CreateSandbox",
    inject: () => {
      hv.onAgent = (a) => a.failOn.set("CreateSandbox", new TtrpcError(Code.INTERNAL, "no holder"));
    },
    code: Code.INTERNAL,
    got: { network: true, writable: true, vm: true },
  },
  {
    step: "ConfigureNetwork",
    inject: () => {
      hv.onAgent = (a) => a.failOn.set("ConfigureNetwork", new TtrpcError(Code.INTERNAL, "no such NIC"));
    },
    code: Code.INTERNAL,
    got: { network: true, writable: true, vm: true },
  },
];

for (const f of faults) {
  test(`pod boot fails at "${f.step}": everything acquired before it is released`, async () => {
    f.inject();
    const { rt } = runtime();
    const b = writeBundle(host.dir, "t1", { netns: NETNS });
    await assert.rejects(rt.create(createSpec(b)), (e: unknown) => f.code === -1 || isCode(f.code)(e));
    // What the boot got that far, and that it all went.
    assert.equal(host.networks.attached, f.got.network ? 1 : 0, "network attached");
    assert.equal(host.networks.held, 0, "network detached");
    assert.equal(host.disks.made.length, f.got.writable ? 1 : 0, "writable layer made");
    for (const p of host.disks.made) assert.ok(!existsSync(p), `${p} removed`);
    assert.equal(hv.vms.length, f.got.vm ? 1 : 0, "VM started");
    assert.deepEqual(hv.running, [], "no VM left running");
    assert.deepEqual(workDirs(), [], "no VM work dir left");

    // Nothing of the failed boot sticks: with the fault gone, the same runtime boots the pod.
    host.networks.failAttach = undefined;
    host.disks.failLayer = undefined;
    host.disks.failWritable = undefined;
    hv.failStart = undefined;
    hv.dieAtBoot = false;
    hv.onAgent = () => undefined;
    hv.maxDevices = undefined;
    writeFileSync(host.configPath, `cache_dir = "${host.dir}"\nhypervisor = "embedded"\n`);
    const { pid } = await rt.create(createSpec(b));
    assert.ok(pid > 0);
    await rt.shutdown();
    assert.deepEqual(hv.running, []);
    assert.equal(host.networks.held, 0);
    assert.deepEqual(workDirs(), []);
  });
}

test("a second task arriving during the boot waits for it and gets its own disks", async () => {
  const { rt } = runtime();
  const a = writeBundle(host.dir, "a");
  const b = writeBundle(host.dir, "b");
  const [ra, rb] = await Promise.all([rt.create(createSpec(a)), rt.create(createSpec(b))]);
  assert.equal(hv.vms.length, 1, "one VM for the pod");
  assert.notEqual(ra.pid, rb.pid);
  const vm = hv.vms[0]!;
  // Both writable layers are extents of the one writable disk; the shared layers are there once.
  const uppers = [...(vm.extents.get("writable")?.values() ?? [])].filter((p) => p.endsWith("cove-upper.ext4"));
  assert.equal(uppers.length, 2);
  assert.equal(vm.config.disks.length, 3);
  await rt.shutdown();
});

test("Rollback undoes newest first, awaits each undo, and runs them all when one fails", async () => {
  const r = new Rollback();
  const done: string[] = [];
  r.defer("a", () => done.push("a"));
  r.defer("b", async () => {
    await new Promise((res) => setTimeout(res, 5));
    throw new Error("b failed");
  });
  r.defer("c", async () => {
    await new Promise((res) => setTimeout(res, 5));
    done.push("c");
  });
  assert.deepEqual(r.held, ["a", "b", "c"]);
  await r.unwind(logger);
  assert.deepEqual(done, ["c", "a"]);
  assert.deepEqual(r.held, []);
  r.defer("d", () => done.push("d"));
  r.dismiss();
  await r.unwind(logger);
  assert.deepEqual(done, ["c", "a"], "a dismissed rollback undoes nothing");
});
