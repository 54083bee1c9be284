/* fsprobe: lists every file under a directory, one line each, sorted by path, so that the same image
 * run under two runtimes (runc on the host, cove in a microVM) can be compared byte for byte:
 *
 *   <path> <type> <mode> <uid>:<gid> <size> <mtime> <what>
 *
 * type: d f l c b p s; mode: octal with setuid/setgid/sticky bits; size: "-" for directories (their
 * size is the filesystem's business); what: a regular file's sha256 (files over 256 MiB:
 * "sampled-sha256", 1 MiB every 256 MiB and the last MiB — enough to catch a wrong size or
 * offsets past 2 and 4 GiB without reading GiBs under emulation), "hardlink=<first path>" when it
 * shares an inode with a path listed before it, a symlink's target, a device's major:minor;
 * then "xattr:<name>=<hex>" for each xattr, sorted. Mount points other than the walked root (and
 * everything under them: /proc, /sys, /dev, the runtime's /etc/hosts...) are left out: they are
 * the runtime's, not the image's. Directories' mtimes are left out too: a runtime creates mount
 * points in them.
 *
 * Static, no dependencies: it runs in any image. Usage: fsprobe [root] (default /).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t n;
} sha256_ctx;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
  uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
  for (int i = 0; i < 64; i++) {
    t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
  }
  c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_init(sha256_ctx *c) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, iv, sizeof iv);
  c->len = 0;
  c->n = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t len) {
  c->len += len;
  while (len) {
    size_t k = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, k);
    c->n += k, p += k, len -= k;
    if (c->n == 64) sha256_block(c, c->buf), c->n = 0;
  }
}

static void sha256_hex(sha256_ctx *c, char out[65]) {
  uint64_t bits = c->len * 8;
  uint8_t pad = 0x80, zero = 0, lenb[8];
  sha256_update(c, &pad, 1);
  while (c->n != 56) sha256_update(c, &zero, 1);
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(c, lenb, 8);
  for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", c->h[i]);
}

/* ---- the walk ---- */
#define BIG (256LL << 20)
#define SAMPLE (1 << 20)
static uint8_t iobuf[SAMPLE];

/* Mount points to leave out (from /proc/self/mountinfo), and the root being walked. */
static char **mounts;
static size_t nmounts;
static const char *root;

/* Inodes seen with more than one link: (dev, ino) -> first path. */
typedef struct {
  dev_t dev;
  ino_t ino;
  char *path;
} seen_t;
static seen_t *seen;
static size_t nseen, capseen;

static void unescape(char *s) { /* mountinfo escapes space, tab, newline, backslash as \ooo */
  char *o = s;
  for (; *s; s++) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
      *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      s += 3;
    } else {
      *o++ = *s;
    }
  }
  *o = 0;
}

static void load_mounts(void) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) return;
  char line[8192];
  while (fgets(line, sizeof line, f)) {
    char *save, *tok = strtok_r(line, " ", &save);
    for (int i = 0; tok && i < 4; i++) tok = strtok_r(NULL, " ", &save); /* 5th field: mount point */
    if (!tok) continue;
    unescape(tok);
    if (strcmp(tok, root) == 0) continue;
    mounts = realloc(mounts, (nmounts + 1) * sizeof *mounts);
    mounts[nmounts++] = strdup(tok);
  }
  fclose(f);
}

static int is_mount(const char *path) {
  for (size_t i = 0; i < nmounts; i++)
    if (strcmp(mounts[i], path) == 0) return 1;
  return 0;
}

static const char *first_link(const struct stat *st, const char *path) {
  for (size_t i = 0; i < nseen; i++)
    if (seen[i].dev == st->st_dev && seen[i].ino == st->st_ino) return seen[i].path;
  if (nseen == capseen) {
    capseen = capseen ? 2 * capseen : 256;
    seen = realloc(seen, capseen * sizeof *seen);
  }
  seen[nseen++] = (seen_t){st->st_dev, st->st_ino, strdup(path)};
  return NULL;
}

static void hash_file(const char *path, off_t size, char *out, size_t outlen) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    snprintf(out, outlen, "unreadable");
    return;
  }
  sha256_ctx c;
  sha256_init(&c);
  char hex[65];
  if (size <= BIG) {
    ssize_t n;
    while ((n = read(fd, iobuf, sizeof iobuf)) > 0) sha256_update(&c, iobuf, (size_t)n);
    sha256_hex(&c, hex);
    snprintf(out, outlen, "sha256:%s", hex);
  } else {
    for (off_t at = 0;; at += BIG) {
      off_t from = at < size - SAMPLE ? at : size - SAMPLE;
      ssize_t n = pread(fd, iobuf, SAMPLE, from);
      if (n > 0) sha256_update(&c, iobuf, (size_t)n);
      if (from == size - SAMPLE) break;
    }
    sha256_hex(&c, hex);
    snprintf(out, outlen, "sampled-sha256:%s", hex);
  }
  close(fd);
}

static void print_xattrs(const char *path) {
  char names[65536];
  ssize_t n = llistxattr(path, names, sizeof names);
  if (n <= 0) return;
  /* sort the NUL-separated names */
  const char *list[1024];
  size_t k = 0;
  for (char *p = names; p < names + n && k < 1024; p += strlen(p) + 1) list[k++] = p;
  for (size_t i = 1; i < k; i++)
    for (size_t j = i; j > 0 && strcmp(list[j - 1], list[j]) > 0; j--) {
      const char *t = list[j];
      list[j] = list[j - 1], list[j - 1] = t;
    }
  static uint8_t val[65536];
  for (size_t i = 0; i < k; i++) {
    ssize_t m = lgetxattr(path, list[i], val, sizeof val);
    printf(" xattr:%s=", list[i]);
    for (ssize_t j = 0; j < m; j++) printf("%02x", val[j]);
  }
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static void entry(const char *path, const char *shown) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    printf("%s ? lstat failed\n", shown);
    return;
  }
  char type = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : S_ISLNK(st.st_mode) ? 'l' : S_ISCHR(st.st_mode) ? 'c'
            : S_ISBLK(st.st_mode) ? 'b' : S_ISFIFO(st.st_mode) ? 'p' : 's';
  printf("%s %c %04o %u:%u ", shown, type, st.st_mode & 07777, st.st_uid, st.st_gid);
  if (type == 'd') printf("- -");
  else printf("%lld %lld", (long long)st.st_size, (long long)st.st_mtime);
  if (type == 'f') {
    const char *first = st.st_nlink > 1 ? first_link(&st, shown) : NULL;
    if (first) {
      printf(" hardlink=%s", first);
    } else {
      char h[96];
      hash_file(path, st.st_size, h, sizeof h);
      printf(" %s", h);
    }
  } else if (type == 'l') {
    char target[4097];
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n < 0 ? 0 : n] = 0;
    printf(" -> %s", target);
  } else if (type == 'c' || type == 'b') {
    printf(" %u:%u", major(st.st_rdev), minor(st.st_rdev));
  }
  print_xattrs(path);
  printf("\n");
}

/* Walks the directory path[0..len) ("" is "/"); prefix: how much of each path is the root's. */
static void walk(char *path, size_t len, size_t prefix) {
  struct dirent **names;
  int n = scandir(len ? path : "/", &names, NULL, by_name);
  if (n < 0) {
    printf("%s ? scandir failed\n", len ? path + prefix : "/");
    return;
  }
  for (int i = 0; i < n; i++) {
    const char *name = names[i]->d_name;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
      free(names[i]);
      continue;
    }
    size_t l = len + 1 + strlen(name);
    if (l >= 4096) {
      printf("%s/%s ? path too long\n", path, name);
      free(names[i]);
      continue;
    }
    path[len] = '/';
    strcpy(path + len + 1, name);
    if (!is_mount(path)) {
      entry(path, path + prefix);
      struct stat st;
      if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) walk(path, l, prefix);
    }
    path[len] = 0;
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv) {
  root = argc > 1 ? argv[1] : "/";
  static char path[4096];
  size_t len = strlen(root);
  while (len > 0 && root[len - 1] == '/') len--; /* "/" walks as "" + "/name" */
  if (len >= sizeof path) return 2;
  memcpy(path, root, len);
  path[len] = 0;
  load_mounts();
  walk(path, len, len);
  return fflush(stdout) == 0 ? 0 : 1;
}
