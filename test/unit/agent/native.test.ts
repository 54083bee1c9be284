// The agent's native helpers: pty window size, pipes and pty masters as Node sockets (EOF / EIO),
// AF_VSOCK listen (where the kernel has vsock).
import assert from "node:assert/strict";
import { closeSync, existsSync, writeSync } from "node:fs";
import { test } from "node:test";
import { getWinsize, makePipe, openPty, setWinsize } from "../../../src/native/pty.ts";
import { listenVsock, socketFromFd } from "../../../src/native/vsock.ts";

function collect(s: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let t = "";
    s.on("data", (d: Buffer) => {
      t += d.toString();
    });
    const end = () => resolve(t);
    s.on("end", end);
    s.on("error", end); // a pty master reads EIO once the slave is closed
  });
}

test("pty: window size set on the master is seen on the slave; output then EIO", async () => {
  const { master, slave } = openPty();
  setWinsize(master, 31, 107);
  assert.deepEqual(getWinsize(slave), { rows: 31, cols: 107 });
  const s = socketFromFd(master);
  const got = collect(s);
  writeSync(slave, "line\n");
  setTimeout(() => closeSync(slave), 50);
  assert.equal(await got, "line\r\n");
  s.destroy();
});

test("pipe: one-way sockets, all bytes then end", async () => {
  const p = makePipe(1 << 20);
  const r = socketFromFd(p.read, { writable: false });
  const w = socketFromFd(p.write, { readable: false });
  const got = collect(r);
  const data = "x".repeat(3 << 20);
  w.write(data, () => w.destroy());
  assert.equal((await got).length, data.length);
});

test("vsock: listens on a port when the kernel has AF_VSOCK", {
  skip: !existsSync("/dev/vsock") && "no /dev/vsock here",
}, async () => {
  const srv = listenVsock(40000 + (process.pid % 20000), () => {});
  await srv.close();
});
