/* KVM and guest-memory syscalls for the embedded VMM (src/vmm). Only syscalls: every struct is
 * laid out and interpreted in TypeScript (src/native/kvm.ts); this file checks that a buffer is
 * at least as large as the ioctl says, and that only KVM ioctls go through it. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uv.h>

/* kvmOpen(): fd of /dev/kvm (close-on-exec). */
static napi_value kvm_open(napi_env env, napi_callback_info info) {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return cove_throw_errno(env, errno, "open(/dev/kvm)");
  return cove_int32(env, fd);
}
COVE_EXPORT(kvmOpen, kvm_open)

/* kvmIoctl(fd, request, arg): arg is a number/bigint (passed by value) or a Buffer/TypedArray
 * (passed by pointer; the kernel reads and writes it in place). Returns the ioctl's result. */
static napi_value kvm_ioctl(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return cove_throw(env, "kvmIoctl(fd, request, arg?)");
  int32_t fd;
  uint32_t req;
  if (cove_arg_int32(env, argv[0], &fd) || cove_arg_uint32(env, argv[1], &req)) return NULL;
  if (_IOC_TYPE(req) != KVMIO) return cove_throw(env, "kvmIoctl: not a KVM ioctl");
  /* KVM_RUN blocks: it belongs to a vCPU thread (vcpu.c), never to the event loop. */
  if (req == KVM_RUN) return cove_throw(env, "kvmIoctl: KVM_RUN is only run by a vCPU thread");
  unsigned long arg = 0;
  if (argc >= 3) {
    bool is_typed = false, is_buffer = false;
    napi_is_typedarray(env, argv[2], &is_typed);
    napi_is_buffer(env, argv[2], &is_buffer);
    if (is_typed || is_buffer) {
      void *data;
      size_t len;
      if (is_buffer) {
        napi_get_buffer_info(env, argv[2], &data, &len);
      } else {
        napi_typedarray_type t;
        size_t n, off;
        napi_value ab;
        void *base;
        napi_get_typedarray_info(env, argv[2], &t, &n, &base, &ab, &off);
        napi_get_arraybuffer_info(env, ab, NULL, &len);
        data = base;
        len -= off;
      }
      if (_IOC_SIZE(req) > len) return cove_throw(env, "kvmIoctl: buffer smaller than the ioctl's struct");
      arg = (unsigned long)data;
    } else {
      int64_t v;
      if (cove_arg_int64(env, argv[2], &v)) return NULL;
      arg = (unsigned long)v;
    }
  }
  int r = ioctl(fd, req, arg);
  if (r < 0) return cove_throw_errno(env, errno, "ioctl(KVM)");
  return cove_int32(env, r);
}
COVE_EXPORT(kvmIoctl, kvm_ioctl)

/* A mapping handed to JS as an external ArrayBuffer. It is unmapped either explicitly
 * (vmmUnmap, which also detaches the ArrayBuffer so every view becomes empty) or when collected. */
static const napi_type_tag MAPPING_TAG = {0x636f76656d617070ULL, 0x696e67206b766d31ULL};

typedef struct mapping {
  void *addr;
  size_t size;
  int unmapped;
} mapping;

static void unmap_finalizer(napi_env env, void *data, void *hint) {
  mapping *m = (mapping *)hint;
  if (!m->unmapped) munmap(m->addr, m->size);
  free(m);
}

static napi_value wrap_mapping(napi_env env, void *p, size_t size) {
  mapping *m = malloc(sizeof *m);
  napi_value ab;
  if (!m) {
    munmap(p, size);
    return cove_throw_errno(env, ENOMEM, "malloc");
  }
  m->addr = p;
  m->size = size;
  m->unmapped = 0;
  if (napi_create_external_arraybuffer(env, p, size, unmap_finalizer, m, &ab) != napi_ok) {
    munmap(p, size);
    free(m);
    return cove_throw(env, "cannot create an external ArrayBuffer");
  }
  /* Remember the mapping on the ArrayBuffer itself so vmmUnmap can find it. */
  napi_value ext;
  napi_create_external(env, m, NULL, NULL, &ext);
  napi_type_tag_object(env, ext, &MAPPING_TAG);
  napi_property_descriptor d = {"__coveMapping", NULL, NULL, NULL, NULL, ext, napi_default, NULL};
  napi_define_properties(env, ab, 1, &d);
  return ab;
}

/* vmmUnmap(arrayBuffer): unmaps a mapping made here now (not at GC) and detaches the
 * ArrayBuffer, so later accesses through any view see length 0 instead of freed memory.
 * Tearing a VM down needs this: a mapped kvm_run keeps the whole VM alive in the kernel. */
static napi_value unmap_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_ab = false;
  if (argc >= 1) napi_is_arraybuffer(env, argv[0], &is_ab);
  if (!is_ab) return cove_throw(env, "vmmUnmap(arrayBuffer)");
  napi_value ext;
  mapping *m = NULL;
  bool tagged = false;
  if (napi_get_named_property(env, argv[0], "__coveMapping", &ext) != napi_ok ||
      napi_check_object_type_tag(env, ext, &MAPPING_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, ext, (void **)&m) != napi_ok || !m) {
    bool pending;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
    return cove_throw(env, "vmmUnmap: not a mapping made by the cove addon");
  }
  if (m->unmapped) return cove_undefined(env);
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) return cove_throw(env, "vmmUnmap: cannot detach the ArrayBuffer");
  munmap(m->addr, m->size);
  m->unmapped = 1;
  return cove_undefined(env);
}
COVE_EXPORT(vmmUnmap, unmap_js)

/* vmmMapAnonymous(size): private anonymous memory (guest RAM) as an ArrayBuffer; unmapped when
 * vmmUnmap is called or the ArrayBuffer is collected. MAP_NORESERVE: pages cost host memory only once the guest
 * touches them. */
static napi_value map_anonymous(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int64_t size;
  if (argc < 1 || cove_arg_int64(env, argv[0], &size)) return NULL;
  if (size <= 0 || (size & 4095)) return cove_throw(env, "vmmMapAnonymous: size must be a positive multiple of 4096");
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return cove_throw_errno(env, errno, "mmap");
  /* Guest RAM stays out of the VMM's core dumps; the distinct VMA flag also keeps the kernel from
   * merging it with neighbouring heap mappings, so /proc/self/smaps shows it on its own. */
  madvise(p, (size_t)size, MADV_DONTDUMP);
  return wrap_mapping(env, p, (size_t)size);
}
COVE_EXPORT(vmmMapAnonymous, map_anonymous)

/* vmmMapFd(fd, size, offset): MAP_SHARED mapping of a file (e.g. a vCPU's kvm_run) as an
 * ArrayBuffer, unmapped by vmmUnmap or when collected. */
static napi_value map_fd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t size, off;
  if (argc < 3 || cove_arg_int32(env, argv[0], &fd) || cove_arg_int64(env, argv[1], &size) ||
      cove_arg_int64(env, argv[2], &off))
    return NULL;
  if (size <= 0 || off < 0) return cove_throw(env, "vmmMapFd: bad size or offset");
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  if (p == MAP_FAILED) return cove_throw_errno(env, errno, "mmap");
  return wrap_mapping(env, p, (size_t)size);
}
COVE_EXPORT(vmmMapFd, map_fd)

/* vmmAddressOf(arrayBuffer | view): host virtual address of its first byte, as a bigint
 * (KVM_SET_USER_MEMORY_REGION's userspace_addr). */
static napi_value address_of(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return cove_throw(env, "vmmAddressOf(buffer)");
  void *data = NULL;
  bool is_ab = false, is_typed = false;
  napi_is_arraybuffer(env, argv[0], &is_ab);
  napi_is_typedarray(env, argv[0], &is_typed);
  if (is_ab) {
    napi_get_arraybuffer_info(env, argv[0], &data, NULL);
  } else if (is_typed) {
    napi_typedarray_type t;
    size_t n, off;
    napi_value ab;
    napi_get_typedarray_info(env, argv[0], &t, &n, &data, &ab, &off);
  } else {
    return cove_throw(env, "vmmAddressOf: expected an ArrayBuffer or a typed array");
  }
  napi_value r;
  napi_create_bigint_uint64(env, (uint64_t)(uintptr_t)data, &r);
  return r;
}
COVE_EXPORT(vmmAddressOf, address_of)

/* vmmEventfd(initval, nonblock): a close-on-exec eventfd (ioeventfd / irqfd). */
static napi_value make_eventfd(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t init = 0;
  bool nonblock = true;
  if (argc >= 1 && cove_arg_uint32(env, argv[0], &init)) return NULL;
  if (argc >= 2) napi_get_value_bool(env, argv[1], &nonblock);
  int fd = eventfd(init, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0));
  if (fd < 0) return cove_throw_errno(env, errno, "eventfd");
  return cove_int32(env, fd);
}
COVE_EXPORT(vmmEventfd, make_eventfd)

/* vmmEventfdWrite(fd, n): adds n to the counter (raises an irqfd). */
static napi_value eventfd_write_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  uint32_t n = 1;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  if (argc >= 2 && cove_arg_uint32(env, argv[1], &n)) return NULL;
  uint64_t v = n;
  if (write(fd, &v, 8) != 8) return cove_throw_errno(env, errno, "write(eventfd)");
  return cove_undefined(env);
}
COVE_EXPORT(vmmEventfdWrite, eventfd_write_js)

/* vmmEventfdRead(fd): the counter (and resets it); 0 if nothing was pending (non-blocking fd). */
static napi_value eventfd_read_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  uint64_t v = 0;
  if (read(fd, &v, 8) != 8) {
    if (errno == EAGAIN) return cove_int32(env, 0);
    return cove_throw_errno(env, errno, "read(eventfd)");
  }
  napi_value r;
  napi_create_double(env, (double)v, &r);
  return r;
}
COVE_EXPORT(vmmEventfdRead, eventfd_read_js)

/* ---- eventfd readiness on the event loop (ioeventfd kicks reach device code this way) ---- */

typedef struct fd_watch {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
  napi_async_context actx;
  int fd;
  int closed;
} fd_watch;

static void watch_closed(uv_handle_t *h) {
  fd_watch *w = (fd_watch *)h->data;
  napi_delete_reference(w->env, w->cb);
  napi_async_destroy(w->env, w->actx);
  free(w);
}

static void watch_ready(uv_poll_t *p, int status, int events) {
  fd_watch *w = (fd_watch *)p->data;
  if (w->closed) return;
  uint64_t v = 0;
  ssize_t n = read(w->fd, &v, 8); /* drains the eventfd; EAGAIN means another reader got it */
  if (n != 8 && status == 0) return;
  napi_handle_scope scope;
  napi_open_handle_scope(w->env, &scope);
  napi_value cb, global, arg, result;
  napi_get_reference_value(w->env, w->cb, &cb);
  napi_get_global(w->env, &global);
  napi_create_double(w->env, status < 0 ? -1 : (double)v, &arg);
  /* make_callback (not call_function): runs microtasks and async hooks like any libuv callback. */
  if (napi_make_callback(w->env, w->actx, global, cb, 1, &arg, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(w->env, &exc);
    napi_fatal_exception(w->env, exc);
  }
  napi_close_handle_scope(w->env, scope);
}

/* vmmFdWatch(fd, cb): calls cb(count) on the event loop each time the eventfd fd is signalled
 * (the counter is read and reset first). Returns a handle for vmmFdUnwatch, which must be called
 * (the watch keeps the event loop alive until then). */
static napi_value fd_watch_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd)) return cove_throw(env, "vmmFdWatch(fd, cb)");
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return cove_throw(env, "no event loop");
  fd_watch *w = calloc(1, sizeof *w);
  if (!w) return cove_throw_errno(env, ENOMEM, "calloc");
  w->env = env;
  w->fd = fd;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r != 0) {
    free(w);
    return cove_throw(env, uv_strerror(r));
  }
  w->poll.data = w;
  napi_create_reference(env, argv[1], 1, &w->cb);
  napi_value name;
  napi_create_string_utf8(env, "cove.fdwatch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->actx);
  uv_poll_start(&w->poll, UV_READABLE, watch_ready);
  napi_value ext;
  napi_create_external(env, w, NULL, NULL, &ext);
  return ext;
}
COVE_EXPORT(vmmFdWatch, fd_watch_js)

/* vmmFdUnwatch(handle): stops watching (idempotent). The fd itself stays open: its owner closes it. */
static napi_value fd_unwatch_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  fd_watch *w;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&w) != napi_ok) return cove_throw(env, "vmmFdUnwatch(handle)");
  if (!w->closed) {
    w->closed = 1;
    uv_poll_stop(&w->poll);
    uv_close((uv_handle_t *)&w->poll, watch_closed);
  }
  return cove_undefined(env);
}
COVE_EXPORT(vmmFdUnwatch, fd_unwatch_js)

/* ---- constants: ioctl numbers and struct sizes straight from <linux/kvm.h> ---- */

static void set_u32(napi_env env, napi_value obj, const char *name, uint32_t v) {
  napi_value n;
  napi_create_uint32(env, v, &n);
  napi_set_named_property(env, obj, name, n);
}

static napi_value kvm_constants(napi_env env, napi_callback_info info) {
  napi_value o;
  napi_create_object(env, &o);
#define C(x) set_u32(env, o, #x, (uint32_t)(x))
  C(KVM_GET_API_VERSION); C(KVM_CHECK_EXTENSION); C(KVM_CREATE_VM); C(KVM_GET_VCPU_MMAP_SIZE);
  C(KVM_GET_SUPPORTED_CPUID); C(KVM_GET_MSR_INDEX_LIST);
  C(KVM_SET_USER_MEMORY_REGION); C(KVM_CREATE_VCPU); C(KVM_SET_TSS_ADDR); C(KVM_SET_IDENTITY_MAP_ADDR);
  C(KVM_CREATE_IRQCHIP); C(KVM_CREATE_PIT2); C(KVM_IRQ_LINE); C(KVM_IRQ_LINE_STATUS); C(KVM_IRQFD); C(KVM_IOEVENTFD);
  C(KVM_SET_GSI_ROUTING); C(KVM_SIGNAL_MSI); C(KVM_GET_REGS); C(KVM_SET_REGS); C(KVM_GET_SREGS);
  C(KVM_SET_SREGS); C(KVM_SET_CPUID2); C(KVM_SET_MSRS); C(KVM_GET_MSRS); C(KVM_SET_FPU); C(KVM_SET_LAPIC);
  C(KVM_GET_LAPIC); C(KVM_SET_XCRS); C(KVM_SET_MP_STATE); C(KVM_GET_MP_STATE); C(KVM_GET_VCPU_EVENTS);
  C(sizeof(struct kvm_regs)); C(sizeof(struct kvm_sregs)); C(sizeof(struct kvm_run));
  C(sizeof(struct kvm_userspace_memory_region)); C(sizeof(struct kvm_irqfd)); C(sizeof(struct kvm_ioeventfd));
  C(sizeof(struct kvm_msi)); C(sizeof(struct kvm_irq_routing_entry)); C(sizeof(struct kvm_cpuid_entry2));
  C(sizeof(struct kvm_pit_config)); C(sizeof(struct kvm_msr_entry)); C(sizeof(struct kvm_lapic_state));
  C(sizeof(struct kvm_xcrs));
  C(offsetof(struct kvm_run, io)); C(offsetof(struct kvm_run, mmio)); C(offsetof(struct kvm_run, exit_reason));
  C(offsetof(struct kvm_run, immediate_exit)); C(offsetof(struct kvm_sregs, cr0)); C(offsetof(struct kvm_sregs, efer));
  C(offsetof(struct kvm_sregs, gdt)); C(offsetof(struct kvm_sregs, idt));
#undef C
  return o;
}
COVE_EXPORT(kvmConstants, kvm_constants)
