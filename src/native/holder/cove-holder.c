/* cove-holder: what a pod's namespace holder execs into (spawnNamespaceHolder in process.c). It is
 * PID 1 of the pod's PID namespace and does nothing but exist and reap the orphans reparented to
 * it, as a pod's pause process does, until SIGKILL ends it. Freestanding (no libc, static, a few
 * KiB): after the exec it holds no page of the agent's, and what it costs is one small process. */
#if !defined(__x86_64__)
#error "cove-holder: x86_64 only (the system calls below are x86_64's)"
#endif

#define NR_RT_SIGPROCMASK 14
#define NR_WAIT4 61
#define NR_RT_SIGTIMEDWAIT 128
#define SIG_SETMASK 2
#define SIGCHLD 17
#define WNOHANG 1
#define KERNEL_SIGSET_SIZE 8 /* _NSIG / 8 */

static long sys4(long n, long a, long b, long c, long d) {
  long ret;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return ret;
}

/* Every signal blocked (SIGKILL cannot be): SIGCHLD is taken synchronously with rt_sigtimedwait,
 * then every child that has exited is reaped. */
__attribute__((noreturn, force_align_arg_pointer, used)) void _start(void) {
  unsigned long all = ~0UL;
  unsigned long chld = 1UL << (SIGCHLD - 1);
  sys4(NR_RT_SIGPROCMASK, SIG_SETMASK, (long)&all, 0, KERNEL_SIGSET_SIZE);
  for (;;) {
    while (sys4(NR_WAIT4, -1, 0, WNOHANG, 0) > 0) {
    }
    sys4(NR_RT_SIGTIMEDWAIT, (long)&chld, 0, 0, KERNEL_SIGSET_SIZE);
  }
}
