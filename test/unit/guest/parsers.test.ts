// Pure parsing used by the guest build and the agent: kernel config, /proc files, command lines.
import assert from "node:assert/strict";
import { test } from "node:test";
import { flag, parseCmdline } from "../../../agent/src/pid1/cmdline.ts";
import { mountedTargets } from "../../../agent/src/pid1/mounts.ts";
import { parseStat } from "../../../agent/src/pid1/reaper.ts";
import { memUsedKiB } from "../../../agent/src/pid1/stats.ts";
import { formatReady, parseReady } from "../../../agent/src/ready.ts";
import { kvmKind } from "../../../src/cli/check.ts";
import { configMismatches, parseConfig } from "../../../src/guest/kernel.ts";
import { hwVirtFlag } from "../../../src/hypervisor/host.ts";

test("parseConfig reads =values and 'is not set' lines", () => {
  const m = parseConfig('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=64\n# a comment\nCONFIG_D="x y"\n');
  assert.deepEqual(
    [...m],
    [
      ["CONFIG_A", "y"],
      ["CONFIG_B", "n"],
      ["CONFIG_C", "64"],
      ["CONFIG_D", '"x y"'],
    ],
  );
});

test("configMismatches names every fragment option the resolved config lost", () => {
  const fragment = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_N=8\n";
  const config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_N=8\n";
  assert.deepEqual(configMismatches(fragment, config), ["CONFIG_B: wanted y, got n", "CONFIG_C: wanted n, got y"]);
  assert.deepEqual(configMismatches(fragment, "CONFIG_A=y\nCONFIG_B=y\nCONFIG_N=8\n"), []);
});

test("parseCmdline: key=value, bare flags, quoted values; flag() truthiness", () => {
  const p = parseCmdline(
    'console=ttyS0 ro init=/init cove.hostname="a b" cove.shutdown_after_ready=1 cove.x=0 quiet\n',
  );
  assert.equal(p.get("console"), "ttyS0");
  assert.equal(p.get("ro"), "");
  assert.equal(p.get("cove.hostname"), "a b");
  assert.equal(flag(p, "cove.shutdown_after_ready"), true);
  assert.equal(flag(p, "quiet"), true);
  assert.equal(flag(p, "cove.x"), false);
  assert.equal(flag(p, "absent"), false);
});

test("mountedTargets decodes mountinfo mount points", () => {
  const info =
    "22 1 254:0 / / ro,relatime - erofs /dev/vda ro\n" +
    "23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw\n" +
    "24 22 0:20 / /mnt/a\\040b rw - tmpfs tmpfs rw\n";
  assert.deepEqual([...mountedTargets(info)], ["/", "/dev", "/mnt/a b"]);
});

test("parseStat copes with spaces and parentheses in comm", () => {
  assert.deepEqual(parseStat("42 (node) S 1 42 42 0 -1"), { state: "S", ppid: 1 });
  assert.deepEqual(parseStat("43 (a b) (c)) Z 7 43 43 0 -1"), { state: "Z", ppid: 7 });
  assert.equal(parseStat("garbage"), undefined);
});

test("memUsedKiB is MemTotal - MemAvailable", () => {
  assert.equal(memUsedKiB("MemTotal:        500000 kB\nMemFree:   1 kB\nMemAvailable:    478000 kB\n"), 22000);
  assert.throws(() => memUsedKiB("MemTotal: 1 kB\n"), /MemAvailable/);
});

test("the readiness line round-trips and is found inside console noise", () => {
  const r = { uptime_ms: 2512, kernel_ms: 1028, agent_ms: 1484, mem_used_kib: 21800 };
  const line = formatReady(r);
  assert.equal(line, "cove-agent ready uptime_ms=2512 kernel_ms=1028 agent_ms=1484 mem_used_kib=21800");
  assert.deepEqual(parseReady(`\x1b[0m[ 1.0] x ${line}\r`), r);
  assert.equal(parseReady("cove-agent ready uptime_ms=abc"), undefined);
});

test("kvmKind: PVM module, hardware flags, or neither", () => {
  const host = (cpuinfo: string, pvm: boolean) => ({ kvm: true, hwVirt: hwVirtFlag(cpuinfo), pvm });
  assert.equal(kvmKind(host("flags\t\t: fpu vme svm sse\n", false)), "hardware");
  assert.equal(kvmKind(host("flags\t\t: fpu vmx\n", true)), "pvm");
  assert.equal(kvmKind(host("flags\t\t: fpu sse\n", false)), "unknown");
});
