import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DEFAULT_MAX_MESSAGE_SIZE,
  encodeFrame,
  FrameDecoder,
  type FrameHeader,
  HEADER_LENGTH,
} from "../../../src/ttrpc/frame.ts";

interface Seen {
  kind: "frame" | "oversize";
  header: FrameHeader;
  payload?: Buffer;
}

function collector(max?: number): { decoder: FrameDecoder; seen: Seen[] } {
  const seen: Seen[] = [];
  const decoder = new FrameDecoder(
    {
      frame: (header, payload) => seen.push({ kind: "frame", header, payload: Buffer.from(payload) }),
      oversize: (header) => seen.push({ kind: "oversize", header }),
    },
    max,
  );
  return { decoder, seen };
}

describe("ttrpc frame header", () => {
  it("is 10 bytes: u32 BE length, u32 BE stream id, type, flags", () => {
    const f = encodeFrame(0x01020304, 2, 0x05, Buffer.from("abc"));
    assert.equal(f.length, HEADER_LENGTH + 3);
    assert.deepEqual([...f.subarray(0, 10)], [0, 0, 0, 3, 1, 2, 3, 4, 2, 5]);
    assert.equal(f.subarray(10).toString(), "abc");
  });

  it("round-trips the largest stream id and a zero-length payload", () => {
    const { decoder, seen } = collector();
    decoder.push(encodeFrame(0xffffffff, 1, 0xff, new Uint8Array(0)));
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]!.header, { length: 0, streamId: 0xffffffff, type: 1, flags: 0xff });
    assert.equal(seen[0]!.payload!.length, 0);
    assert.ok(decoder.idle);
  });
});

describe("FrameDecoder", () => {
  const frames = [
    encodeFrame(1, 1, 0, Buffer.from("hello")),
    encodeFrame(3, 1, 0, new Uint8Array(0)),
    encodeFrame(5, 2, 4, Buffer.alloc(300, 7)),
    encodeFrame(7, 9, 0, Buffer.from("x")),
  ];
  const all = Buffer.concat(frames);

  function check(seen: Seen[]): void {
    assert.equal(seen.length, frames.length);
    seen.forEach((s, i) => {
      assert.equal(s.kind, "frame");
      assert.equal(s.header.streamId, 2 * i + 1);
      assert.deepEqual(s.payload, frames[i]!.subarray(HEADER_LENGTH));
    });
  }

  it("decodes several frames from one chunk", () => {
    const { decoder, seen } = collector();
    decoder.push(all);
    check(seen);
    assert.ok(decoder.idle);
  });

  it("decodes the same frames split at every byte boundary", () => {
    for (let cut = 0; cut <= all.length; cut++) {
      const { decoder, seen } = collector();
      decoder.push(all.subarray(0, cut));
      decoder.push(all.subarray(cut));
      check(seen);
      assert.ok(decoder.idle, `idle after split at ${cut}`);
    }
  });

  it("decodes the same frames fed one byte at a time", () => {
    const { decoder, seen } = collector();
    for (let i = 0; i < all.length; i++) {
      decoder.push(all.subarray(i, i + 1));
      // Mid-header and mid-payload of the first frame: a partial frame is held.
      if (i === 4 || i === 12) assert.equal(decoder.idle, false);
    }
    assert.ok(decoder.idle);
    check(seen);
  });

  it("hands out whole-chunk frames as views and split frames as copies", () => {
    const views: Uint8Array[] = [];
    const d = new FrameDecoder({ frame: (_h, p) => views.push(p), oversize: () => {} });
    const f = encodeFrame(1, 1, 0, Buffer.from("abcdef"));
    d.push(f);
    assert.equal(views[0]!.buffer, f.buffer);
    d.push(f.subarray(0, 12));
    d.push(f.subarray(12));
    assert.notEqual(views[1]!.buffer, f.buffer);
    assert.equal(Buffer.from(views[1]!).toString(), "abcdef");
  });

  it("accepts a payload of exactly the limit and skips one byte more, then resynchronises", () => {
    const max = 64;
    const ok = encodeFrame(1, 1, 0, Buffer.alloc(max, 1));
    const big = encodeFrame(3, 1, 0, Buffer.alloc(max + 1, 2));
    const after = encodeFrame(5, 1, 0, Buffer.from("after"));
    const stream = Buffer.concat([ok, big, after]);
    for (let cut = 0; cut <= stream.length; cut += 7) {
      const { decoder, seen } = collector(max);
      decoder.push(stream.subarray(0, cut));
      decoder.push(stream.subarray(cut));
      assert.deepEqual(
        seen.map((s) => [s.kind, s.header.streamId, s.header.length]),
        [
          ["frame", 1, max],
          ["oversize", 3, max + 1],
          ["frame", 5, 5],
        ],
      );
      assert.equal(seen[2]!.payload!.toString(), "after");
    }
  });

  it("skips a huge declared length without allocating it", () => {
    const { decoder, seen } = collector();
    const header = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0]);
    const before = process.memoryUsage().arrayBuffers;
    decoder.push(header);
    for (let i = 0; i < 64; i++) decoder.push(Buffer.alloc(64 * 1024));
    const grown = process.memoryUsage().arrayBuffers - before;
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.kind, "oversize");
    assert.equal(seen[0]!.header.length, 0xffffffff);
    assert.ok(grown < 64 * 1024 * 1024, `buffered ${grown} bytes`);
    assert.equal(decoder.idle, false, "still skipping the rest of the 4 GiB payload");
  });

  it("uses 4 MiB as the default limit", () => {
    assert.equal(DEFAULT_MAX_MESSAGE_SIZE, 4 * 1024 * 1024);
    const { decoder, seen } = collector();
    const h = Buffer.alloc(10);
    h.writeUInt32BE(DEFAULT_MAX_MESSAGE_SIZE + 1, 0);
    h.writeUInt32BE(1, 4);
    h[8] = 1;
    decoder.push(h);
    assert.equal(seen[0]?.kind, "oversize");
  });
});
