/* Process-level syscalls Node lacks: the shim daemon's subreaper, and the guest agent's holder of
 * a pod's shared namespaces. */
#include "registry.h"
#include <errno.h>
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

/* The holder's whole life, in the child of a multi-threaded process: raw syscalls only (all
 * async-signal-safe). It keeps none of the parent's fds, and as PID 1 of a new PID namespace reaps
 * whatever is orphaned there (as a pod's pause process does). Every signal stays blocked: SIGCHLD
 * is taken with sigwaitinfo; SIGKILL from the parent ends it. */
static void holder_main(void) {
  syscall(SYS_close_range, 0U, ~0U, 0U);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    siginfo_t si;
    syscall(SYS_rt_sigtimedwait, &chld, &si, NULL, 8); /* 8: the kernel's sigset size (_NSIG / 8) */
    while (syscall(SYS_wait4, -1, NULL, WNOHANG, NULL) > 0) {
    }
  }
}

/* spawnNamespaceHolder(flags): a child in new namespaces (CLONE_NEWPID | CLONE_NEWIPC |
 * CLONE_NEWUTS only) that does nothing but exist; the namespaces under /proc/<pid>/ns are what a
 * pod's containers join. Returns its pid. */
static napi_value spawn_namespace_holder(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t flags;
  if (argc < 1 || cove_arg_uint32(env, argv[0], &flags)) return NULL;
  const uint32_t allowed = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  if (flags & ~allowed) return cove_throw(env, "spawnNamespaceHolder: only CLONE_NEWPID, CLONE_NEWIPC and CLONE_NEWUTS");
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the child starts with every signal blocked */
  long pid = syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
  if (pid == 0) {
    holder_main();
    syscall(SYS_exit, 0);
  }
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) return cove_throw_errno(env, err, "clone");
  napi_value out;
  napi_create_int32(env, (int32_t)pid, &out);
  return out;
}
COVE_EXPORT(spawnNamespaceHolder, spawn_namespace_holder)
