// A tiny static block benchmark for the test guest (fio is not in the test root): O_DIRECT
// sequential read/write in 1 MiB requests and 4 KiB random reads at queue depth 1, each for a
// fixed time, timed inside the guest. Compiled on the host with `gcc -static`.
// Output, one line per run: `BLKBENCH <test> ops=<n> bytes=<n> ns=<n>`.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const SOURCE = String.raw`
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* xorshift64*: deterministic offsets, no libc rand state */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 2685821657736338717ull;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: blkbench <dev> seqread|seqwrite|randread <seconds> <region-MiB>\n");
    return 2;
  }
  const char *dev = argv[1], *test = argv[2];
  uint64_t limit = (uint64_t)(atof(argv[3]) * 1e9);
  uint64_t region = (uint64_t)atoll(argv[4]) << 20;
  int is_write = strcmp(test, "seqwrite") == 0;
  int is_rand = strcmp(test, "randread") == 0;
  if (!is_write && !is_rand && strcmp(test, "seqread") != 0) {
    fprintf(stderr, "unknown test %s\n", test);
    return 2;
  }
  size_t bs = is_rand ? 4096 : (1 << 20);
  int fd = open(dev, (is_write ? O_WRONLY : O_RDONLY) | O_DIRECT);
  if (fd < 0) {
    perror(dev);
    return 1;
  }
  void *buf;
  if (posix_memalign(&buf, 4096, bs)) return 1;
  memset(buf, 0x5a, bs);
  uint64_t blocks = region / bs, ops = 0, off = 0;
  uint64_t t0 = now_ns(), t;
  do {
    if (is_rand) off = (next_rand() % blocks) * bs;
    ssize_t n = is_write ? pwrite(fd, buf, bs, (off_t)off) : pread(fd, buf, bs, (off_t)off);
    if (n != (ssize_t)bs) {
      perror(test);
      return 1;
    }
    ops++;
    if (!is_rand) off = (off + bs) % (blocks * bs);
    t = now_ns();
  } while (t - t0 < limit);
  if (is_write && fdatasync(fd) != 0) {
    perror("fdatasync");
    return 1;
  }
  t = now_ns();
  printf("BLKBENCH %s ops=%llu bytes=%llu ns=%llu\n", test, (unsigned long long)ops,
         (unsigned long long)(ops * bs), (unsigned long long)(t - t0));
  close(fd);
  return 0;
}
`;

/** Compiles the tool statically into `dir`; returns the binary's path. */
export function buildBlkBench(dir: string): string {
  const src = join(dir, "blkbench.c");
  const bin = join(dir, "blkbench");
  writeFileSync(src, SOURCE);
  execFileSync("gcc", ["-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", bin, src], { stdio: "inherit" });
  return bin;
}

export interface BlkBenchResult {
  test: string;
  ops: number;
  bytes: number;
  ns: number;
}

/** Parses the tool's output lines. */
export function parseBlkBench(text: string): BlkBenchResult[] {
  return [...text.matchAll(/^BLKBENCH (\S+) ops=(\d+) bytes=(\d+) ns=(\d+)$/gm)].map((m) => ({
    test: m[1]!,
    ops: Number(m[2]),
    bytes: Number(m[3]),
    ns: Number(m[4]),
  }));
}
