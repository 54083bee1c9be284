/* One native thread per vCPU: it loops on KVM_RUN and, for every exit that reaches userspace,
 * hands the exit to JavaScript on the event loop (a threadsafe function) and sleeps until JS
 * answers, then re-enters the guest. A native pthread rather than a worker isolate: a worker
 * costs megabytes per vCPU, this costs a stack. The exit itself is read and answered by JS
 * through the vCPU's kvm_run mapping (src/vmm/vcpu.ts); nothing here interprets it.
 *
 * Stopping: a flag, kvm_run.immediate_exit = 1 and a no-op signal to the thread, so KVM_RUN
 * returns EINTR whether the thread is in the guest, about to enter it, or waiting for JS. */
#include "registry.h"
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

typedef struct vcpu_runner {
  int fd;
  struct kvm_run *run;
  pthread_t thread;
  int started, joined;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int answered; /* JS has answered the exit being handled */
  atomic_int stop;
  napi_threadsafe_function tsfn;
  napi_ref run_ref; /* keeps the kvm_run ArrayBuffer mapped while the thread may touch it */
  napi_env env;
  char name[16]; /* thread name, shown in /proc/<pid>/task/<tid>/comm */
} vcpu_runner;

static int kick_signal(void) { return SIGRTMIN + 6; }

static void kick_handler(int sig) { (void)sig; /* only there to make KVM_RUN return EINTR */ }

static int install_kick_handler(void) {
  static int installed = 0;
  if (installed) return 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = kick_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: KVM_RUN must come back with EINTR */
  if (sigaction(kick_signal(), &sa, NULL) != 0) return -1;
  installed = 1;
  return 0;
}

static void *vcpu_thread(void *arg) {
  vcpu_runner *r = (vcpu_runner *)arg;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kick_signal());
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  while (!atomic_load(&r->stop)) {
    int rc = ioctl(r->fd, KVM_RUN, 0);
    intptr_t err = rc < 0 ? errno : 0;
    if (err == EINTR || err == EAGAIN) {
      if (atomic_load(&r->stop)) break;
      /* A kick without stop: JS sees KVM_EXIT_INTR (the vCPU is parked outside the guest). */
      r->run->immediate_exit = 0;
      r->run->exit_reason = KVM_EXIT_INTR;
      err = 0;
    }
    pthread_mutex_lock(&r->mu);
    r->answered = 0;
    pthread_mutex_unlock(&r->mu);
    if (napi_call_threadsafe_function(r->tsfn, (void *)err, napi_tsfn_blocking) != napi_ok) break;
    pthread_mutex_lock(&r->mu);
    while (!r->answered && !atomic_load(&r->stop)) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
  }
  return NULL;
}

static void answer(vcpu_runner *r) {
  pthread_mutex_lock(&r->mu);
  r->answered = 1;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* On the event loop: onExit(errno) — 0, or the errno of a failed KVM_RUN. If it returns anything
 * but `false` the vCPU resumes at once; `false` means JS will call vcpuResume later. */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  vcpu_runner *r = (vcpu_runner *)ctx;
  if (env == NULL || atomic_load(&r->stop)) return;
  napi_value global, arg, result;
  napi_get_global(env, &global);
  napi_create_int32(env, (int32_t)(intptr_t)data, &arg);
  if (napi_call_function(env, global, cb, 1, &arg, &result) != napi_ok) return; /* exception: stays parked */
  napi_valuetype t;
  napi_typeof(env, result, &t);
  if (t == napi_boolean) {
    bool b;
    napi_get_value_bool(env, result, &b);
    if (!b) return;
  }
  answer(r);
}

static void stop_and_join(vcpu_runner *r) {
  atomic_store(&r->stop, 1);
  if (r->run) r->run->immediate_exit = 1;
  pthread_mutex_lock(&r->mu);
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->started && !r->joined) {
    pthread_kill(r->thread, kick_signal());
    pthread_join(r->thread, NULL);
    r->joined = 1;
  }
  if (r->tsfn) {
    napi_release_threadsafe_function(r->tsfn, napi_tsfn_abort);
    r->tsfn = NULL;
  }
}

static void runner_finalize(napi_env env, void *data, void *hint) {
  vcpu_runner *r = (vcpu_runner *)data;
  stop_and_join(r);
  if (r->run_ref) napi_delete_reference(env, r->run_ref);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
}

static vcpu_runner *get_runner(napi_env env, napi_value v) {
  vcpu_runner *r = NULL;
  if (napi_get_value_external(env, v, (void **)&r) != napi_ok || !r) {
    cove_throw(env, "expected a vCPU runner handle");
    return NULL;
  }
  return r;
}

/* vcpuCreate(vcpuFd, kvmRun: ArrayBuffer, onExit, threadName?): a runner (not started yet). */
static napi_value vcpu_create(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 3 || cove_arg_int32(env, argv[0], &fd)) return cove_throw(env, "vcpuCreate(fd, kvmRun, onExit)");
  bool is_ab = false;
  napi_is_arraybuffer(env, argv[1], &is_ab);
  if (!is_ab) return cove_throw(env, "vcpuCreate: kvmRun must be the ArrayBuffer mapping of the vCPU fd");
  void *run;
  size_t len;
  napi_get_arraybuffer_info(env, argv[1], &run, &len);
  if (len < sizeof(struct kvm_run)) return cove_throw(env, "vcpuCreate: kvmRun mapping too small");
  if (install_kick_handler() != 0) return cove_throw_errno(env, errno, "sigaction");
  vcpu_runner *r = calloc(1, sizeof *r);
  if (!r) return cove_throw_errno(env, ENOMEM, "calloc");
  r->fd = fd;
  strcpy(r->name, "vcpu");
  if (argc >= 4) {
    size_t n;
    napi_get_value_string_utf8(env, argv[3], r->name, sizeof r->name, &n); /* truncates to 15 */
  }
  r->run = (struct kvm_run *)run;
  r->env = env;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  napi_create_reference(env, argv[1], 1, &r->run_ref);
  napi_value name;
  napi_create_string_utf8(env, "cove.vcpu", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[2], NULL, name, 1, 1, NULL, NULL, r, call_js, &r->tsfn) != napi_ok) {
    napi_delete_reference(env, r->run_ref);
    free(r);
    return cove_throw(env, "vcpuCreate: cannot create threadsafe function");
  }
  napi_value ext;
  napi_create_external(env, r, runner_finalize, NULL, &ext);
  return ext;
}
COVE_EXPORT(vcpuCreate, vcpu_create)

/* vcpuStart(runner): starts the thread (once). */
static napi_value vcpu_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vcpu_runner *r = argc ? get_runner(env, argv[0]) : NULL;
  if (!r) return NULL;
  if (r->started) return cove_throw(env, "vcpuStart: already started");
  if (atomic_load(&r->stop)) return cove_throw(env, "vcpuStart: runner was stopped");
  /* The kick signal stays blocked in this (the event loop's) thread; the vCPU thread inherits
   * the mask and unblocks it itself, so a stray kick never lands here. */
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, kick_signal());
  pthread_sigmask(SIG_BLOCK, &set, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  int e = pthread_create(&r->thread, &attr, vcpu_thread, r);
  pthread_attr_destroy(&attr);
  if (e != 0) return cove_throw_errno(env, e, "pthread_create");
  pthread_setname_np(r->thread, r->name); /* here, not in the thread: visible as soon as we return */
  r->started = 1;
  return cove_undefined(env);
}
COVE_EXPORT(vcpuStart, vcpu_start)

/* vcpuResume(runner): the exit handed to JS is answered; re-enter the guest. */
static napi_value vcpu_resume(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vcpu_runner *r = argc ? get_runner(env, argv[0]) : NULL;
  if (!r) return NULL;
  answer(r);
  return cove_undefined(env);
}
COVE_EXPORT(vcpuResume, vcpu_resume)

/* vcpuKick(runner): forces the vCPU out of the guest; JS then sees KVM_EXIT_INTR. */
static napi_value vcpu_kick(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vcpu_runner *r = argc ? get_runner(env, argv[0]) : NULL;
  if (!r) return NULL;
  if (atomic_load(&r->stop) || !r->run) return cove_undefined(env);
  r->run->immediate_exit = 1;
  if (r->started && !r->joined) pthread_kill(r->thread, kick_signal());
  return cove_undefined(env);
}
COVE_EXPORT(vcpuKick, vcpu_kick)

/* vcpuStop(runner): stops and joins the thread (idempotent); no onExit call happens afterwards. */
static napi_value vcpu_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  vcpu_runner *r = argc ? get_runner(env, argv[0]) : NULL;
  if (!r) return NULL;
  stop_and_join(r);
  if (r->run_ref) {
    napi_delete_reference(env, r->run_ref);
    r->run_ref = NULL;
  }
  r->run = NULL; /* the mapping may be collected from now on */
  return cove_undefined(env);
}
COVE_EXPORT(vcpuStop, vcpu_stop)
