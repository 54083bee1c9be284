// The guest kernel command line is built in one place (src/guest/cmdline.ts); a VMM that adds its own
// base to the pod's line must not pass a parameter twice.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GUEST_BASE_PARAMS, GUEST_ROOT_PARAMS, guestCmdline, kernelCmdline } from "../../../src/guest/cmdline.ts";
import { MACHINE_CMDLINE } from "../../../src/vmm/machine.ts";

const params = (s: string) => s.split(" ");

describe("guest kernel command line", () => {
  it("has the base and root parameters, then the options in order", () => {
    assert.equal(
      guestCmdline({ quiet: true, hostname: "web-1", extra: "printk.time=1" }),
      [...GUEST_BASE_PARAMS, ...GUEST_ROOT_PARAMS, "quiet", "cove.hostname=web-1", "printk.time=1"].join(" "),
    );
    assert.equal(guestCmdline(), [...GUEST_BASE_PARAMS, ...GUEST_ROOT_PARAMS].join(" "));
  });

  it("makes the hostname safe for the agent", () => {
    assert.match(guestCmdline({ hostname: "a b/c$" }), / cove\.hostname=a-b-c-$/);
    assert.match(guestCmdline({ hostname: "" }), / cove\.hostname=cove$/);
    assert.equal(params(guestCmdline({ hostname: "x".repeat(100) })).at(-1), `cove.hostname=${"x".repeat(63)}`);
  });

  it("drops a parameter already on the line, keeping the first place", () => {
    assert.equal(kernelCmdline("a b=1  c", ["b=1", "d"], undefined, false, "", "a e"), "a b=1 c d e");
    assert.equal(kernelCmdline("b=1", "b=2"), "b=1 b=2", "a different value is a different parameter");
  });

  it("the embedded VMM's base plus a pod's line has every parameter once", () => {
    const line = params(kernelCmdline(MACHINE_CMDLINE, guestCmdline({ hostname: "p", quiet: true })));
    assert.equal(new Set(line).size, line.length);
    for (const p of ["console=ttyS0", "reboot=t", "panic=-1", "pci=off", "acpi=off", "root=/dev/vda", "quiet"]) {
      assert.equal(line.filter((x) => x === p).length, 1, p);
    }
  });
});
