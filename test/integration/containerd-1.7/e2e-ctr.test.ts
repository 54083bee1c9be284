// The smoke set of ../e2e-ctr.test.ts (ctr run, a CRI pod, exec) against containerd 1.7.24 (Debian
// trixie, fetched by the harness): config version 2, the shim answers JSON version 2.
process.env.COVE_CONTAINERD = "1.7.24";
process.env.COVE_E2E_SMOKE = "1";
await import("../e2e-ctr.test.ts");
