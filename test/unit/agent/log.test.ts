// The agent's side of the log stream: the sink (console before a reader, the port after, a bounded
// buffer that drops the oldest and says so), the line cut, and /dev/kmsg records.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { kmsgLine, parseKmsg } from "../../../agent/src/log-kmsg.ts";
import { cutLine, type LogReader, LogSink } from "../../../agent/src/log-sink.ts";
import { MAX_LOG_LINE } from "../../../src/sandbox/agent/log-format.ts";

/** A reader whose write() says "full" after `room` lines until drained. */
class FakeReader extends EventEmitter implements LogReader {
  lines: string[] = [];
  destroyed = false;
  constructor(public room = Number.POSITIVE_INFINITY) {
    super();
  }
  write(line: string): boolean {
    this.lines.push(line);
    return this.lines.length < this.room;
  }
  drain(more: number): void {
    this.room = this.lines.length + more;
    this.emit("drain");
  }
}

const line = (msg: string, level = 30) => `${JSON.stringify({ level, msg })}\n`;

test("before a reader: console and buffer; the reader gets the buffer, then the console gets nothing", () => {
  const cons: string[] = [];
  const sink = new LogSink((l) => cons.push(l));
  sink.write(line("boot 1"));
  sink.write(line("kernel"), { console: false });
  assert.deepEqual(cons, [line("boot 1")]);
  const r = new FakeReader();
  assert.equal(sink.attach(r), true);
  assert.equal(sink.attach(new FakeReader()), false, "one reader at a time");
  assert.deepEqual(r.lines, [line("boot 1"), line("kernel")]);
  sink.write(line("later"));
  sink.write(line("fatal", 60), { console: true, always: true });
  assert.deepEqual(cons, [line("boot 1"), line("fatal", 60)]);
  assert.equal(r.lines.length, 4);
  assert.equal(sink.buffered, 0);
  // The reader goes: the console again.
  sink.detach(r);
  sink.write(line("after"));
  assert.equal(cons.at(-1), line("after"));
});

test("a slow reader: the buffer stays bounded, the oldest lines go, and the next line out says how many", () => {
  const sink = new LogSink(() => {}, 10_000);
  const r = new FakeReader(1);
  sink.attach(r);
  for (let i = 0; i < 5000; i++) sink.write(line(`l${i}`));
  assert.ok(sink.buffered <= 10_000, `buffered ${sink.buffered}`);
  assert.ok(sink.droppedTotal > 4000);
  r.drain(1e9);
  const note = r.lines[1]!.split("\n")[0]!;
  assert.match(JSON.parse(note).msg, /^\d+ log lines dropped/);
  assert.equal(JSON.parse(note).dropped, sink.droppedTotal);
  assert.equal(r.lines.at(-1), line("l4999"));
  assert.equal(sink.buffered, 0);
});

test("a line longer than MAX_LOG_LINE becomes a record of its own with level, message and ids", () => {
  const short = line("fine");
  assert.equal(cutLine(short), short);
  const long = `${JSON.stringify({ level: 50, msg: "big error", container: "c1", err: "x".repeat(20_000) })}\n`;
  const cut = cutLine(long);
  assert.ok(Buffer.byteLength(cut) <= MAX_LOG_LINE);
  const o = JSON.parse(cut);
  assert.equal(o.level, 50);
  assert.equal(o.msg, "big error");
  assert.equal(o.container, "c1");
  assert.equal(o.cut_from, long.length - 1);
  // Worst case: every character needs a \u escape.
  const nasty = cutLine(`${JSON.stringify({ msg: "\u0001".repeat(20_000) })}\n`);
  assert.ok(Buffer.byteLength(nasty) <= MAX_LOG_LINE, `${Buffer.byteLength(nasty)}`);
  assert.ok(Buffer.byteLength(cutLine("é".repeat(10_000))) <= MAX_LOG_LINE);
});

test("/dev/kmsg records: priority, sequence, time, message; continuation lines dropped", () => {
  assert.deepEqual(parseKmsg("6,339,5140900,-;NET: Registered PF_VSOCK protocol family\n SUBSYSTEM=net\n"), {
    priority: 6,
    seq: 339,
    usec: 5140900,
    msg: "NET: Registered PF_VSOCK protocol family",
  });
  assert.equal(parseKmsg("12,1,2,-,caller=T1;hi\n")?.msg, "hi");
  assert.equal(parseKmsg("garbage"), undefined);
  assert.equal(parseKmsg("x,1,2,-;m"), undefined);
  const o = JSON.parse(kmsgLine({ priority: 4, seq: 7, usec: 9, msg: "warned" }, 123));
  assert.deepEqual(o, { level: 40, time: 123, src: "kernel", msg: "warned", kseq: 7, kusec: 9 });
  assert.equal(JSON.parse(kmsgLine({ priority: 6, seq: 1, usec: 1, msg: "" })).level, 20, "KERN_INFO is debug");
  assert.equal(JSON.parse(kmsgLine({ priority: 5, seq: 1, usec: 1, msg: "" })).level, 30, "KERN_NOTICE is info");
  assert.equal(JSON.parse(kmsgLine({ priority: 2, seq: 1, usec: 1, msg: "" })).level, 50);
});
