// The end-to-end suite ../e2e-faults.test.ts against containerd 2.1.9 (Debian sid, fetched by the
// harness): config version 3, the shim answers version 3 and is served over Task API v3, the
// guest's crun gets OCI runtime spec 1.2.
process.env.COVE_CONTAINERD = "2.1.9";
await import("../e2e-faults.test.ts");
