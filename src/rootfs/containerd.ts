// A small gRPC client for the two containerd calls the rootfs code makes (a container's snapshot,
// a snapshot's parent), on containerd's main socket (the shim's -address). @grpc/grpc-js carries
// the calls; the messages are our own protos (proto/containerd/services/). Loaded lazily: only a
// container create with overlay layers uses it.
import type { Client, Metadata } from "@grpc/grpc-js";
import { messageType } from "../proto/root.ts";

export interface ContainerdAddress {
  /** containerd's gRPC socket, e.g. /run/containerd/containerd.sock (unix:// optional). */
  address: string;
  namespace: string;
}

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: "UNKNOWN" | "VIEW" | "ACTIVE" | "COMMITTED";
}

export interface ContainerdLookup {
  container(id: string): Promise<{ snapshotter: string; snapshotKey: string }>;
  snapshot(snapshotter: string, key: string): Promise<SnapshotInfo>;
  close(): void;
}

type Obj = Record<string, unknown>;

/** gRPC status NOT_FOUND: containerd does not have what was asked for. */
export const GRPC_NOT_FOUND = 5;

/** A failed call, with its gRPC status code (GRPC_NOT_FOUND: containerd has no such thing). */
export class ContainerdError extends Error {
  constructor(
    method: string,
    readonly code: number,
    details: string,
  ) {
    super(`containerd ${method}: ${details}`);
  }
}

/** Opens a client; every call has `deadlineMs` (containerd answers these from its metadata store). */
export async function containerdLookup(at: ContainerdAddress, deadlineMs = 5_000): Promise<ContainerdLookup> {
  const grpc = await import("@grpc/grpc-js");
  const target = at.address.startsWith("unix:") ? at.address : `unix://${at.address}`;
  const client: Client = new grpc.Client(target, grpc.credentials.createInsecure());
  const meta: Metadata = new grpc.Metadata();
  meta.set("containerd-namespace", at.namespace);
  const call = (method: string, reqType: string, resType: string, req: Obj): Promise<Obj> => {
    const Req = messageType(reqType);
    const Res = messageType(resType);
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        method,
        (m: Obj) => Buffer.from(Req.encode(Req.fromObject(m)).finish()),
        (b: Buffer) => Res.toObject(Res.decode(b), { enums: String, defaults: true }) as Obj,
        req,
        meta,
        { deadline: Date.now() + deadlineMs },
        (err, res) => (err ? reject(new ContainerdError(method, err.code, err.details || err.message)) : resolve(res!)),
      );
    });
  };
  return {
    async container(id) {
      const r = await call(
        "/containerd.services.containers.v1.Containers/Get",
        "containerd.services.containers.v1.GetContainerRequest",
        "containerd.services.containers.v1.GetContainerResponse",
        { id },
      );
      const c = (r.container ?? {}) as Obj;
      return { snapshotter: String(c.snapshotter ?? ""), snapshotKey: String(c.snapshot_key ?? "") };
    },
    async snapshot(snapshotter, key) {
      const r = await call(
        "/containerd.services.snapshots.v1.Snapshots/Stat",
        "containerd.services.snapshots.v1.StatSnapshotRequest",
        "containerd.services.snapshots.v1.StatSnapshotResponse",
        { snapshotter, key },
      );
      const i = (r.info ?? {}) as Obj;
      return {
        name: String(i.name ?? ""),
        parent: String(i.parent ?? ""),
        kind: String(i.kind ?? "UNKNOWN") as SnapshotInfo["kind"],
      };
    },
    close: () => client.close(),
  };
}
