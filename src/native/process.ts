import { fn } from "./load.ts";

/** PR_SET_CHILD_SUBREAPER on this process (the shim daemon adopts orphaned helpers, as runc's shim does). */
export function setChildSubreaper(): void {
  fn<() => void>("setChildSubreaper")();
}
