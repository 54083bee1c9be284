import { fn } from "./load.ts";

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** The credentials of the process at the other end of a connected unix socket (SO_PEERCRED). */
export function peerCred(fd: number): PeerCred {
  return fn<(fd: number) => PeerCred>("peerCred")(fd);
}
