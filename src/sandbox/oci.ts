// What the sandbox reads from a container's OCI spec (the bundle's config.json): the spec itself,
// its annotations, the hostname and sysctls the pod asks for.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { errorMessage, InvalidArgumentError } from "../common/errors.ts";

export type Json = Record<string, unknown>;

export function readSpec(bundle: string): Json {
  try {
    return JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as Json;
  } catch (e) {
    throw new InvalidArgumentError(`cannot read ${bundle}/config.json: ${errorMessage(e)}`);
  }
}

export function annotationsOf(spec: Json): Record<string, string> {
  const a = spec.annotations;
  return a && typeof a === "object" ? (a as Record<string, string>) : {};
}

/** The spec's hostname, if it names one. */
export function hostnameOf(spec: Json): string | undefined {
  return typeof spec.hostname === "string" ? spec.hostname : undefined;
}

/** The pod's sysctls (CRI puts them on the sandbox's spec): string values only, as OCI has them. */
export function sysctlsOf(oci: Json): Record<string, string> {
  const linux = oci.linux as { sysctl?: unknown } | undefined;
  const out: Record<string, string> = {};
  if (linux && typeof linux.sysctl === "object" && linux.sysctl !== null)
    for (const [k, v] of Object.entries(linux.sysctl)) if (typeof v === "string") out[k] = v;
  return out;
}
