// Which OCI spec fields the guest can honour. The guest's runtime is crun 1.21 (built from Debian's
// source, src/guest/crun.ts), which parses OCI runtime spec 1.2.x and silently ignores keys it does
// not know; so every field is checked against spec 1.2.1's (what containerd 2.1 writes) before the
// spec reaches crun, and a field the guest would drop or cannot honour is refused with
// INVALID_ARGUMENT naming it, instead of a container that quietly lacks what it asked for.
import { invalid } from "../api/errors.ts";

type Json = Record<string, unknown>;

/** The fields of runtime-spec v1.2.1's Spec, Process and Linux objects (specs-go/config.go). */
const KNOWN: Record<"spec" | "process" | "linux", ReadonlySet<string>> = {
  spec: new Set([
    "ociVersion",
    "process",
    "root",
    "hostname",
    "domainname",
    "mounts",
    "hooks",
    "annotations",
    "linux",
    "solaris",
    "windows",
    "vm",
    "zos",
  ]),
  process: new Set([
    "terminal",
    "consoleSize",
    "user",
    "args",
    "commandLine",
    "env",
    "cwd",
    "capabilities",
    "rlimits",
    "noNewPrivileges",
    "apparmorProfile",
    "oomScoreAdj",
    "scheduler",
    "selinuxLabel",
    "ioPriority",
    "execCPUAffinity",
  ]),
  linux: new Set([
    "uidMappings",
    "gidMappings",
    "sysctl",
    "resources",
    "cgroupsPath",
    "namespaces",
    "devices",
    "seccomp",
    "rootfsPropagation",
    "maskedPaths",
    "readonlyPaths",
    "mountLabel",
    "intelRdt",
    "personality",
    "timeOffsets",
  ]),
};

/** Known fields a microVM guest cannot honour, and why. */
const UNHONOURABLE: Record<string, string> = {
  "linux.intelRdt": "the guest has no Intel RDT (resctrl)",
  vm: "cove is the VM: a hypervisor for the OCI runtime cannot be nested in the guest",
  solaris: "the guest is Linux",
  windows: "the guest is Linux",
  zos: "the guest is Linux",
  "process.commandLine": "a Windows-only field",
};

const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function refuse(field: string, why: string): never {
  throw invalid(`spec field ${field} cannot be honoured in the guest: ${why}`);
}

/** Throws INVALID_ARGUMENT naming the first field of spec (or of an exec's process) the guest cannot honour. */
export function checkSupportedFields(spec: Json, scope: "spec" | "process" = "spec"): void {
  const check = (obj: Json, level: keyof typeof KNOWN, prefix: string) => {
    for (const key of Object.keys(obj)) {
      const field = prefix ? `${prefix}.${key}` : key;
      if (!KNOWN[level].has(key)) {
        refuse(
          field,
          "the guest's runtime (crun 1.21, OCI runtime spec up to 1.2) does not know it and would ignore it",
        );
      }
      const why = UNHONOURABLE[field];
      if (why && obj[key] !== undefined && obj[key] !== null) refuse(field, why);
    }
  };
  if (scope === "process") {
    check(spec, "process", "process");
    return;
  }
  check(spec, "spec", "");
  if (isObj(spec.process)) check(spec.process, "process", "process");
  if (isObj(spec.linux)) check(spec.linux, "linux", "linux");
}
