// The agent's network configurator, byte level: rtnetlink encoding/decoding (round trips, truncated
// and lying lengths, NLMSG_ERROR with extended acks), errno → gRPC code mapping, the request
// validation, and IP/CIDR/MAC helpers. No kernel: the integration test (agent-net) does that.
import assert from "node:assert/strict";
import { endianness } from "node:os";
import { test } from "node:test";
import { parseNetworkConfig, renderResolvConf } from "../../../agent/src/network/config.ts";
import { errnoError } from "../../../agent/src/network/configure.ts";
import { formatIp, ipBytes, normalizeMac, parseCidr } from "../../../agent/src/network/ip.ts";
import {
  attrBytes,
  attrString,
  attrU32,
  encodeMessage,
  IFA_ADDRESS,
  IFA_F_NODAD,
  IFA_FLAGS,
  IFA_LOCAL,
  IFLA_ADDRESS,
  IFLA_IFNAME,
  IFLA_MTU,
  ifaddrmsg,
  ifinfomsg,
  NetlinkParseError,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLMSG_DONE,
  NLMSG_ERROR,
  type NlMsg,
  parseAddr,
  parseAttrs,
  parseError,
  parseLink,
  parseMessages,
  parseRoute,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PRIORITY,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
  rtmsg,
} from "../../../agent/src/network/rtnetlink.ts";
import { errnoName, errorOf } from "../../../agent/src/network/rtnl.ts";
import { errorMessage as messageOf } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const LE = endianness() === "LE";
const u32 = (b: Buffer, o: number) => (LE ? b.readUInt32LE(o) : b.readUInt32BE(o));
const u16 = (b: Buffer, o: number) => (LE ? b.readUInt16LE(o) : b.readUInt16BE(o));

function only(buf: Buffer): NlMsg {
  const ms = parseMessages(buf);
  assert.equal(ms.length, 1);
  return ms[0] as NlMsg;
}

test("RTM_NEWLINK: encoded header, 4-byte aligned attributes, parsed back", () => {
  const mac = Buffer.from([0x02, 0, 0, 0xab, 0xcd, 0xef]);
  const b = encodeMessage(RTM_NEWLINK, 0x5, 77, ifinfomsg({ index: 9, flags: 1, change: 1 }), [
    attrString(IFLA_IFNAME, "eth1"), // 5 bytes + header: padded to 12
    attrBytes(IFLA_ADDRESS, mac),
    attrU32(IFLA_MTU, 1450),
  ]);
  assert.equal(u32(b, 0), b.length);
  assert.equal(b.length, 16 + 16 + 12 + 12 + 8);
  assert.equal(u16(b, 4), RTM_NEWLINK);
  assert.equal(u16(b, 6), 0x5);
  assert.equal(u32(b, 8), 77);
  assert.equal(u16(b, 32), 9); // IFLA_IFNAME nla_len = 4 + "eth1\0"
  const m = only(b);
  assert.equal(m.seq, 77);
  assert.deepEqual(parseLink(m), { index: 9, flags: 1, name: "eth1", mac: "02:00:00:ab:cd:ef", mtu: 1450 });
});

test("RTM_NEWADDR and RTM_NEWROUTE round trips (IPv4 and IPv6)", () => {
  const a6 = ipBytes("fd00:1::5");
  const addr = only(
    encodeMessage(RTM_NEWADDR, 0, 1, ifaddrmsg({ family: 10, prefixlen: 64, flags: IFA_F_NODAD, scope: 0, index: 3 }), [
      attrBytes(IFA_LOCAL, a6),
      attrBytes(IFA_ADDRESS, a6),
      attrU32(IFA_FLAGS, IFA_F_NODAD),
    ]),
  );
  const pa = parseAddr(addr);
  assert.equal(pa.family, 10);
  assert.equal(pa.prefixlen, 64);
  assert.equal(pa.index, 3);
  assert.equal(pa.allFlags, IFA_F_NODAD);
  assert.equal(formatIp(pa.address as Buffer), "fd00:1::5");

  const route = only(
    encodeMessage(RTM_NEWROUTE, 0, 2, rtmsg({ family: 2, dstLen: 16, table: 254, protocol: 3, scope: 0, type: 1 }), [
      attrU32(RTA_OIF, 4),
      attrBytes(RTA_DST, ipBytes("10.20.0.0")),
      attrBytes(RTA_GATEWAY, ipBytes("10.1.0.1")),
      attrU32(RTA_PRIORITY, 100),
    ]),
  );
  const pr = parseRoute(route);
  assert.equal(pr.dstLen, 16);
  assert.equal(pr.table, 254);
  assert.equal(pr.protocol, 3);
  assert.equal(pr.oif, 4);
  assert.equal(pr.priority, 100);
  assert.equal(formatIp(pr.dst as Buffer), "10.20.0.0");
  assert.equal(formatIp(pr.gateway as Buffer), "10.1.0.1");
});

test("several messages in one datagram, the last one unpadded", () => {
  const a = encodeMessage(RTM_NEWLINK, 2, 5, ifinfomsg({ index: 1 }), [attrString(IFLA_IFNAME, "lo")]);
  const done = encodeMessage(NLMSG_DONE, 2, 5, Buffer.alloc(4));
  const ms = parseMessages(Buffer.concat([a, done]));
  assert.deepEqual(
    ms.map((m) => m.type),
    [RTM_NEWLINK, NLMSG_DONE],
  );
  assert.equal(parseError(ms[1] as NlMsg).errno, 0);
});

test("truncated and lying lengths are NetlinkParseErrors, never out-of-range reads", () => {
  const good = encodeMessage(RTM_NEWLINK, 0, 1, ifinfomsg({ index: 2 }), [attrString(IFLA_IFNAME, "eth0")]);
  for (let cut = 1; cut < good.length; cut++) {
    const part = good.subarray(0, cut);
    assert.throws(() => parseMessages(part), NetlinkParseError, `cut at ${cut}`);
  }
  const lying = Buffer.from(good);
  lying.writeUInt32LE(good.length + 4, 0);
  assert.throws(() => parseMessages(lying), /does not fit/);
  const tooShort = Buffer.from(good);
  tooShort.writeUInt32LE(8, 0);
  assert.throws(() => parseMessages(tooShort), /length 8/);
  // An attribute longer than its message, and a message shorter than its family header.
  const badAttr = Buffer.from(good);
  badAttr.writeUInt16LE(200, 32);
  assert.throws(() => parseLink(only(badAttr)), /attribute length 200/);
  const shortBody = encodeMessage(RTM_NEWLINK, 0, 1, Buffer.alloc(8));
  assert.throws(() => parseLink(only(shortBody)), /shorter than its 16-byte header/);
  assert.throws(() => parseAttrs(Buffer.from([9, 0, 1, 0, 0]), 0), NetlinkParseError);
  assert.throws(() => parseRoute(only(good)), /expected RTM_NEWROUTE/);
});

function errorMessage(errno: number, flags: number, request: Buffer, tlvs: Buffer = Buffer.alloc(0)): Buffer {
  const e = Buffer.alloc(4);
  if (LE) e.writeInt32LE(-errno);
  else e.writeInt32BE(-errno);
  const echoed = flags & NLM_F_CAPPED ? request.subarray(0, 16) : request;
  return encodeMessage(NLMSG_ERROR, flags, 9, Buffer.concat([e, echoed, tlvs]));
}

test("NLMSG_ERROR: ack, errno, extended-ack text (capped and uncapped), errno names", () => {
  const req = encodeMessage(
    RTM_NEWROUTE,
    5,
    9,
    rtmsg({ family: 2, dstLen: 0, table: 254, protocol: 3, scope: 0, type: 1 }),
  );
  assert.equal(errorOf(only(errorMessage(0, NLM_F_CAPPED, req)), "x"), undefined);

  const text = Buffer.from("Nexthop has invalid gateway\0");
  const tlv = encodeMessage(0, 0, 0, Buffer.alloc(0), [attrBytes(1, text)]).subarray(16);
  for (const capped of [true, false]) {
    const m = only(errorMessage(101, NLM_F_ACK_TLVS | (capped ? NLM_F_CAPPED : 0), req, tlv));
    assert.deepEqual(parseError(m), { errno: 101, message: "Nexthop has invalid gateway" });
    const err = errorOf(m, "add route default via 10.0.0.1 dev eth0");
    assert.equal(err?.code, "ENETUNREACH");
    assert.equal(err?.errno, 101);
    assert.match(
      err?.message ?? "",
      /^add route default via 10\.0\.0\.1 dev eth0: ENETUNREACH \(.*\): Nexthop has invalid gateway$/,
    );
  }
  // Without TLVs: the errno alone. A lying echoed length is refused.
  assert.equal(errorOf(only(errorMessage(17, 0, req)), "add")?.code, "EEXIST");
  const bad = errorMessage(22, NLM_F_ACK_TLVS, req, tlv);
  bad.writeUInt32LE(5000, 20);
  assert.throws(() => parseError(only(bad)), /echoed request length 5000/);
  const short = Buffer.concat([encodeMessage(NLMSG_ERROR, 0, 1, Buffer.alloc(0)), Buffer.alloc(2)]);
  short.writeUInt32LE(18, 0); // an error message with 2 bytes where the errno's 4 belong
  assert.throws(() => parseError(only(short)), NetlinkParseError);
  assert.equal(errnoName(19), "ENODEV");
  assert.equal(errnoName(99999), "errno 99999");
});

test("kernel errnos map to gRPC codes", () => {
  const codeForErrno = (errno: string) => grpcStatus(errnoError(errno, errno)).code;
  assert.equal(codeForErrno("EINVAL"), Code.INVALID_ARGUMENT);
  assert.equal(codeForErrno("ENETUNREACH"), Code.INVALID_ARGUMENT);
  assert.equal(codeForErrno("ENODEV"), Code.NOT_FOUND);
  assert.equal(codeForErrno("EEXIST"), Code.ALREADY_EXISTS);
  assert.equal(codeForErrno("EPERM"), Code.INTERNAL);
});

test("IP, CIDR and MAC helpers", () => {
  for (const a of [
    "0.0.0.0",
    "10.88.0.5",
    "::",
    "::1",
    "fe80::1",
    "2001:db8::1:0:0:1",
    "fd00:0:0:1::",
    "1:2:3:4:5:6:7:8",
  ])
    assert.equal(formatIp(ipBytes(a)), a);
  assert.equal(ipBytes("::ffff:1.2.3.4").toString("hex"), "00000000000000000000ffff01020304");
  assert.equal(formatIp(ipBytes("2001:0DB8:0:0:0:0:0:1")), "2001:db8::1");
  assert.deepEqual((({ family, len }) => ({ family, len }))(parseCidr("fd00::5/64")), { family: "inet6", len: 64 });
  for (const bad of ["10.0.0.1", "10.0.0.1/33", "fd00::/129", "10.0.0.256/8", "x/8", "10.0.0.1/-1", "fe80::1%eth0/64"])
    assert.throws(() => parseCidr(bad), Error, bad);
  assert.throws(() => parseCidr("10.0.0.1/24", { network: true }), /host bits/);
  assert.equal(parseCidr("10.0.0.0/24", { network: true }).len, 24);
  assert.equal(normalizeMac("02:AB:cd:00:11:22"), "02:ab:cd:00:11:22");
  for (const bad of ["02:ab:cd:00:11", "02-ab-cd-00-11-22", "", 5]) assert.throws(() => normalizeMac(bad));
});

function invalidArg(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => grpcStatus(e).code === Code.INVALID_ARGUMENT && re.test(messageOf(e)));
}

test("request validation: a well-formed config, then each kind of bad field is INVALID_ARGUMENT", () => {
  const ok = {
    interfaces: [{ mac: "02:00:00:00:00:01", name: "eth0", mtu: 1450, addresses: ["10.88.0.5/16", "fd00::5/64"] }],
    routes: [
      { dst: "10.96.0.0/12", dev: "eth0" },
      { dst: "default", gateway: "10.88.0.1", dev: "eth0", family: "inet" },
      { dst: "default", gateway: "fd00::1", dev: "eth0", metric: 10 },
      { dst: "default", dev: "eth0", family: "inet6", scope: "link" },
    ],
    dns: {
      nameservers: ["10.96.0.10"],
      searches: ["default.svc.cluster.local", "cluster.local"],
      options: ["ndots:5"],
    },
  };
  const cfg = parseNetworkConfig(ok);
  assert.equal(cfg.interfaces[0]?.addresses.length, 2);
  assert.deepEqual(
    cfg.routes.map((r) => [r.family, r.dst?.len, r.scope, r.metric]),
    [
      ["inet", 12, undefined, 0],
      ["inet", undefined, undefined, 0],
      ["inet6", undefined, undefined, 10],
      ["inet6", undefined, 253, 0],
    ],
  );
  assert.equal(
    renderResolvConf(cfg.dns!),
    "search default.svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
  );
  const iface = ok.interfaces[0]!;
  const withIface = (i: object) => ({ interfaces: [{ ...iface, ...i }] });
  invalidArg(() => parseNetworkConfig(withIface({ mac: "zz" })), /mac/);
  invalidArg(() => parseNetworkConfig(withIface({ name: "a/b" })), /name/);
  invalidArg(() => parseNetworkConfig(withIface({ name: "a-very-long-interface" })), /name/);
  invalidArg(() => parseNetworkConfig(withIface({ mtu: 20 })), /mtu/);
  invalidArg(() => parseNetworkConfig(withIface({ addresses: ["10.0.0.1"] })), /addresses\[0\].*not a CIDR/);
  invalidArg(() => parseNetworkConfig(withIface({ addresses: ["10.0.0.1/40"] })), /prefix length 40/);
  invalidArg(() => parseNetworkConfig({ interfaces: [iface, { ...iface, name: "eth1" }] }), /listed twice/);
  invalidArg(() => parseNetworkConfig({ routes: [{ dst: "10.0.0.1/8", dev: "eth0" }] }), /host bits/);
  invalidArg(() => parseNetworkConfig({ routes: [{ dst: "default", dev: "eth0" }] }), /needs family/);
  invalidArg(() => parseNetworkConfig({ routes: [{ dst: "10.0.0.0/8", gateway: "fd00::1", dev: "eth0" }] }), /mixes/);
  invalidArg(() => parseNetworkConfig({ routes: [{ dst: "default", gateway: "x", dev: "eth0" }] }), /gateway/);
  invalidArg(() => parseNetworkConfig({ routes: [{ dst: "default", gateway: "10.0.0.1", dev: "" }] }), /dev/);
  invalidArg(
    () => parseNetworkConfig({ routes: [{ dst: "default", gateway: "10.0.0.1", dev: "e", scope: "far" }] }),
    /scope/,
  );
  invalidArg(() => parseNetworkConfig({ dns: { nameservers: ["dns.example"] } }), /nameservers/);
  invalidArg(() => parseNetworkConfig({ dns: { searches: ["a b"] } }), /searches/);
  invalidArg(() => parseNetworkConfig({ dns: { options: ["x\nnameserver 1.2.3.4"] } }), /options/);
  invalidArg(() => parseNetworkConfig({ interfaces: new Array(65).fill(iface) }), /at most 64/);
});
