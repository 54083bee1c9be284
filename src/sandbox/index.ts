export { type HostKvm, probeHost } from "../hypervisor/host.ts";
export { type BackendChoice, chooseBackend, registerBackend } from "../hypervisor/select.ts";
export { checkGuestArtifacts, GUEST_BUILD_COMMAND } from "./guest.ts";
export { configPathFromOptions } from "./options.ts";
export { type SandboxOptions, SandboxRuntime } from "./sandbox.ts";
