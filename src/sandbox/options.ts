// The runtime options containerd passes with a task (CreateTaskRequest.options): which cove config
// the pod uses.
import { messageType } from "../proto/root.ts";
import type { AnyValue } from "../shim/runtime.ts";

/** config_path from a runtimeoptions.v1.Options Any, if that is what the options are. */
export function configPathFromOptions(options: AnyValue | undefined): string | undefined {
  if (!options?.type_url) return undefined;
  const name = options.type_url.slice(options.type_url.lastIndexOf("/") + 1);
  if (name !== "runtimeoptions.v1.Options") return undefined;
  const T = messageType("runtimeoptions.v1.Options");
  const o = T.toObject(T.decode(options.value)) as { config_path?: string };
  return o.config_path || undefined;
}
