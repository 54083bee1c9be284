// Unix sockets that only root may use (the shim runs as root, so the files are root's). The bind
// runs under umask 0177, so the socket file is mode 0600 from the moment it exists: there is no
// window in which another user could connect before a chmod. Binding a Unix socket is synchronous
// (the native unixListen, and net.Server.listen(path) binds before it returns), so the umask
// covers exactly the bind; it is process-wide meanwhile, which is why it is restored at once.
import { chmodSync } from "node:fs";

export const PRIVATE_SOCKET_MODE = 0o600;

/** Runs `bind` under umask 0177: files it creates are 0600 (sockets: only root connects). */
export function underPrivateUmask<T>(bind: () => T): T {
  const old = process.umask(0o177);
  try {
    return bind();
  } finally {
    process.umask(old);
  }
}

/** Runs `bind` (which creates the socket file at `path`, or throws) privately, then makes sure of the mode. */
export function bindPrivate<T>(path: string, bind: () => T): T {
  const r = underPrivateUmask(bind);
  chmodSync(path, PRIVATE_SOCKET_MODE);
  return r;
}
