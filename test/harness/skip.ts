// Loud skips: an integration test that cannot run on this machine says exactly why (CI installs
// everything, so nothing should skip there).
import { existsSync } from "node:fs";

/** What an end-to-end test with containerd needs; returns false (run) or the reason to skip. */
export function requireIntegration(extra: { path: string; why: string }[] = []): false | string {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root (containerd, mounts and /run/containerd need it)");
  const needs = [
    { path: "/usr/bin/containerd", why: "containerd (apt-get install containerd)" },
    { path: "/usr/bin/ctr", why: "ctr (apt-get install containerd)" },
    { path: "/usr/bin/containerd-shim-runc-v2", why: "containerd-shim-runc-v2 (apt-get install containerd)" },
    { path: "/bin/busybox", why: "static busybox for test images (apt-get install busybox-static)" },
    ...extra,
  ];
  for (const n of needs) if (!existsSync(n.path)) missing.push(`${n.path}: ${n.why}`);
  if (missing.length === 0) return false;
  const reason = `SKIPPED — this machine lacks: ${missing.join("; ")}. Run scripts/setup.sh as root.`;
  console.error(`\n!!! ${reason}\n`);
  return reason;
}
