// Connecting a tap to the pod's interface with tc, as Kata's "tcfilter" model does: an ingress
// qdisc on each side and a u32 match-everything filter whose mirred action redirects every frame
// to the other side's egress. No bridge, no IP forwarding, no iptables: the namespace's own stack
// never sees the frames, and the guest (with the interface's MAC and addresses) is what the
// network talks to. (u32 rather than matchall: kernels built without CLS_MATCHALL exist, this
// host's among them.)
import { errorMessage } from "../common/errors.ts";
import { CommandError } from "../common/exec.ts";
import type { NetnsShell } from "./iproute.ts";

const INGRESS = "ffff:";

/** What was created, so that undoing it removes exactly that. */
export interface Redirect {
  /** The interfaces on which we added the ingress qdisc (its filters go with it). */
  qdiscs: string[];
}

/** Redirects every frame arriving on `a` out of `b`, and every frame arriving on `b` out of `a`. */
export async function redirectBothWays(sh: NetnsShell, a: string, b: string): Promise<Redirect> {
  const done: Redirect = { qdiscs: [] };
  try {
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      await addIngress(sh, from);
      done.qdiscs.push(from);
      await sh.tc(
        ...["filter", "add", "dev", from, "parent", INGRESS, "protocol", "all"],
        ...["u32", "match", "u32", "0", "0"],
        ...["action", "mirred", "egress", "redirect", "dev", to],
      );
    }
    return done;
  } catch (e) {
    await removeRedirect(sh, done);
    throw e;
  }
}

async function addIngress(sh: NetnsShell, dev: string): Promise<void> {
  try {
    await sh.tc("qdisc", "add", "dev", dev, "ingress");
  } catch (e) {
    // Someone else's ingress qdisc (another shim, a CNI plugin): sharing it would mean removing
    // their filters on teardown, so refuse clearly instead.
    if (e instanceof CommandError && /exists|Exclusivity/i.test(e.stderr)) {
      throw new Error(`interface ${dev} already has an ingress qdisc; refusing to take it over`);
    }
    throw e;
  }
}

/** Removes the ingress qdiscs we added (and so their filters); a vanished interface is fine. */
export async function removeRedirect(sh: NetnsShell, r: Redirect): Promise<string[]> {
  const errors: string[] = [];
  for (const dev of r.qdiscs.splice(0).reverse()) {
    try {
      await sh.tc("qdisc", "del", "dev", dev, "ingress");
    } catch (e) {
      if (
        e instanceof CommandError &&
        /Cannot find device|No such|Invalid handle|Cannot open network namespace|setns|reassociate/i.test(e.stderr)
      )
        continue;
      errors.push(errorMessage(e));
    }
  }
  return errors;
}
