// Every socket the shim creates is mode 0600 and owned by root (the shim runs as root): its ttrpc
// socket, the hybrid-vsock socket and the vhost-user sockets QEMU connects to. Created under a
// permissive umask here, to show the mode does not come from the caller's umask.
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { listenOrReuse } from "../../../src/shim/manager.ts";
import { VhostUserBackend } from "../../../src/virtio/vhost-user/backend.ts";
import { VsockDevice } from "../../../src/virtio/vsock/device.ts";
import { HybridVsock } from "../../../src/virtio/vsock/hybrid.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-socket-modes-"));
let umask = 0;
before(() => {
  umask = process.umask(0);
});
after(() => {
  process.umask(umask);
  rmSync(dir, { recursive: true, force: true });
});

function assertPrivate(path: string): void {
  const st = statSync(path);
  assert.ok(st.isSocket(), `${path} is a socket`);
  assert.equal((st.mode & 0o777).toString(8), "600", `${path} mode`);
  assert.equal(st.uid, process.getuid?.(), `${path} owned by the shim's user`);
  if (process.getuid?.() === 0) assert.equal(st.uid, 0, `${path} is root's`);
}

describe("sockets the shim creates", () => {
  const logger = pino({ level: "silent" });

  it("the shim's ttrpc socket", async () => {
    const r = await listenOrReuse(join(dir, "shim.sock"));
    assert.equal(r.kind, "listening");
    if (r.kind === "listening") closeSync(r.fd);
    assertPrivate(join(dir, "shim.sock"));
  });

  it("the hybrid-vsock socket", async () => {
    const h = new HybridVsock(new VsockDevice({ guestCid: 3, logger }), join(dir, "hybrid.vsock"), { logger });
    await h.listen();
    try {
      assertPrivate(join(dir, "hybrid.vsock"));
    } finally {
      await h.close();
    }
  });

  it("the vhost-user sockets", () => {
    const be = new VhostUserBackend(new VsockDevice({ guestCid: 3, logger }), join(dir, "vsock.sock"), {
      queues: 2,
      logger,
    });
    be.listen();
    try {
      assertPrivate(join(dir, "vsock.sock"));
    } finally {
      be.close();
    }
  });
});
