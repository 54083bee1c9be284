// Reads a tar (from memory) into a map of name → header and data, for tests of the image builder.
import { Readable } from "node:stream";
import { extract, type Header } from "tar-stream";

export async function untar(buf: Buffer): Promise<Map<string, { h: Header; data: Buffer }>> {
  const out = new Map<string, { h: Header; data: Buffer }>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("entry", (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c: unknown) => chunks.push(c as Buffer));
      stream.on("end", () => {
        out.set(h.name, { h, data: Buffer.concat(chunks) });
        next();
      });
      stream.resume();
    });
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  Readable.from([buf]).pipe(ex);
  await done;
  return out;
}
