/* Process-level syscalls Node lacks: the shim daemon's subreaper, and the guest agent's holder of
 * a pod's shared namespaces. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static napi_value set_child_subreaper(napi_env env, napi_callback_info info) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return cove_throw_errno(env, errno, "prctl(PR_SET_CHILD_SUBREAPER)");
  return cove_undefined(env);
}
COVE_EXPORT(setChildSubreaper, set_child_subreaper)

#define HOLDER_MAX_WRITES 32
#define HOLDER_PATH_MAX 128
#define HOLDER_DATA_MAX 256

struct holder_write {
  char path[HOLDER_PATH_MAX];
  char data[HOLDER_DATA_MAX];
  size_t len;
};

/* The holder's first moments, in the child of a multi-threaded process (a copy-on-write copy of the
 * agent): raw syscalls only (all async-signal-safe). First the writes that must happen inside its
 * new namespaces (IPC sysctls: a new IPC namespace starts from the defaults), each result (0 or
 * errno, one byte) reported on `report`; then it closes every fd of the parent's but the report
 * pipe (O_CLOEXEC) and execs `holder` (src/native/holder/cove-holder.c), which drops the copy of the
 * agent's memory. The exec closes the report pipe, so the parent's read returns EOF only once this
 * process holds neither an fd nor a page of the agent's. If the exec fails, one more byte (its
 * errno) goes on the pipe and the child exits. Every signal stays blocked across the exec. */
static void holder_main(const struct holder_write *w, uint32_t n, int report, const char *holder) {
  for (uint32_t i = 0; i < n; i++) {
    unsigned char res = 0;
    long fd = syscall(SYS_openat, AT_FDCWD, w[i].path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      res = (unsigned char)errno;
    } else {
      if (syscall(SYS_write, fd, w[i].data, w[i].len) != (long)w[i].len) res = errno ? (unsigned char)errno : EIO;
      syscall(SYS_close, fd);
    }
    syscall(SYS_write, report, &res, 1);
  }
  if (report > 0) syscall(SYS_close_range, 0U, (unsigned)report - 1U, 0U);
  syscall(SYS_close_range, (unsigned)report + 1U, ~0U, 0U);
  char *const argv[] = {(char *)"cove-holder", NULL};
  char *const envp[] = {NULL};
  syscall(SYS_execve, holder, argv, envp);
  unsigned char err = (unsigned char)errno;
  syscall(SYS_write, report, &err, 1);
}

/* spawnNamespaceHolder(flags, writes, holder): a child in new namespaces (CLONE_NEWPID |
 * CLONE_NEWIPC | CLONE_NEWUTS only) that execs `holder` (an absolute path) and does nothing but
 * exist; the namespaces under /proc/<pid>/ns are what a pod's containers join. `writes`: [path
 * under /proc/sys/, data][] written from inside them first. Returns { pid, errors: errno per write
 * (0 = written), execError: errno of a failed exec (0 = the holder runs) }. */
static napi_value spawn_namespace_holder(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t flags;
  if (argc < 3 || cove_arg_uint32(env, argv[0], &flags))
    return argc < 3 ? cove_throw(env, "spawnNamespaceHolder(flags, writes, holder)") : NULL;
  static char holder[HOLDER_PATH_MAX * 2];
  if (cove_arg_string(env, argv[2], holder, sizeof holder) != 0) return NULL;
  if (holder[0] != '/') return cove_throw(env, "spawnNamespaceHolder: the holder's path must be absolute");
  const uint32_t allowed = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  if (flags & ~allowed) return cove_throw(env, "spawnNamespaceHolder: only CLONE_NEWPID, CLONE_NEWIPC and CLONE_NEWUTS");
  static struct holder_write writes[HOLDER_MAX_WRITES];
  uint32_t n = 0;
  napi_get_array_length(env, argv[1], &n);
  if (n > HOLDER_MAX_WRITES) return cove_throw(env, "spawnNamespaceHolder: too many writes");
  for (uint32_t i = 0; i < n; i++) {
    napi_value pair, p, d;
    napi_get_element(env, argv[1], i, &pair);
    napi_get_element(env, pair, 0, &p);
    napi_get_element(env, pair, 1, &d);
    if (cove_arg_string(env, p, writes[i].path, HOLDER_PATH_MAX) != 0) return NULL;
    if (cove_arg_string(env, d, writes[i].data, HOLDER_DATA_MAX) != 0) return NULL;
    if (strncmp(writes[i].path, "/proc/sys/", 10) != 0 || strstr(writes[i].path, ".."))
      return cove_throw(env, "spawnNamespaceHolder: writes go under /proc/sys/ only");
    writes[i].len = strlen(writes[i].data);
  }
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return cove_throw_errno(env, errno, "pipe2");
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the child starts with every signal blocked */
  long pid = syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
  if (pid == 0) {
    holder_main(writes, n, report[1], holder);
    syscall(SYS_exit, 127);
  }
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(report[1]);
  if (pid < 0) {
    close(report[0]);
    return cove_throw_errno(env, err, "clone");
  }
  /* Read to EOF, not to n bytes: EOF is the exec closing the child's last fd of ours (see
   * holder_main); a byte after the n results is the exec's errno. */
  unsigned char res[HOLDER_MAX_WRITES + 1] = {0};
  size_t got = 0;
  for (;;) {
    unsigned char buf[HOLDER_MAX_WRITES];
    ssize_t r = read(report[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    for (ssize_t i = 0; i < r && got < n + 1; i++) res[got++] = buf[i];
  }
  close(report[0]);
  napi_value out, errors, v;
  napi_create_object(env, &out);
  napi_create_int32(env, (int32_t)pid, &v);
  napi_set_named_property(env, out, "pid", v);
  napi_create_array_with_length(env, n, &errors);
  for (uint32_t i = 0; i < n; i++) {
    napi_create_int32(env, i < got ? res[i] : EIO, &v);
    napi_set_element(env, errors, i, v);
  }
  napi_set_named_property(env, out, "errors", errors);
  napi_create_int32(env, got > n ? res[n] : got == n ? 0 : EIO, &v);
  napi_set_named_property(env, out, "execError", v);
  return out;
}
COVE_EXPORT(spawnNamespaceHolder, spawn_namespace_holder)
