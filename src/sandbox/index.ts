export { type BackendChoice, chooseBackend, type HostKvm, probeHost, registerBackend } from "./backend.ts";
export { checkGuestArtifacts, GUEST_BUILD_COMMAND } from "./guest.ts";
export { configPathFromOptions } from "./options.ts";
export { type SandboxOptions, SandboxRuntime } from "./sandbox.ts";
