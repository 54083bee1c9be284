/* Block-backing syscalls Node lacks: fallocate (discard / write-zeroes) and a block device's size. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

/* The (fd, mode, offset, length) arguments both fallocate entry points take; -1 if one threw. */
static int fallocate_args(napi_env env, napi_callback_info info, int32_t *fd, int32_t *mode, int64_t *off, int64_t *len) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || cove_arg_int32(env, argv[0], fd) || cove_arg_int32(env, argv[1], mode) ||
      cove_arg_int64(env, argv[2], off) || cove_arg_int64(env, argv[3], len))
    return -1;
  return 0;
}

/* fallocate(fd, mode, offset, length) */
static napi_value fallocate_js(napi_env env, napi_callback_info info) {
  int32_t fd, mode;
  int64_t off, len;
  if (fallocate_args(env, info, &fd, &mode, &off, &len)) return NULL;
  if (fallocate(fd, mode, off, len) != 0) return cove_throw_errno(env, errno, "fallocate");
  return cove_undefined(env);
}
COVE_EXPORT(fallocate, fallocate_js)

/* fallocateAsync(fd, mode, offset, length) -> Promise<void>: the syscall runs on libuv's thread
 * pool, because punching or zeroing a large range can take long enough to stall the event loop. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd, mode;
  int64_t off, len;
  int err;
} fallocate_job;

static void fallocate_exec(napi_env env, void *data) {
  (void)env;
  fallocate_job *j = data;
  j->err = fallocate(j->fd, j->mode, j->off, j->len) == 0 ? 0 : errno;
}

static void fallocate_done(napi_env env, napi_status status, void *data) {
  fallocate_job *j = data;
  if (status == napi_ok && j->err == 0) {
    napi_resolve_deferred(env, j->deferred, cove_undefined(env));
  } else {
    /* Build the same Error the sync path throws, then take it back as a value. */
    napi_value err;
    cove_throw_errno(env, status == napi_ok ? j->err : ECANCELED, "fallocate");
    napi_get_and_clear_last_exception(env, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value fallocate_async_js(napi_env env, napi_callback_info info) {
  int32_t fd, mode;
  int64_t off, len;
  if (fallocate_args(env, info, &fd, &mode, &off, &len)) return NULL;
  fallocate_job *j = calloc(1, sizeof *j);
  if (!j) return cove_throw_errno(env, ENOMEM, "fallocate");
  j->fd = fd;
  j->mode = mode;
  j->off = off;
  j->len = len;
  napi_value promise, name;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "cove:fallocate", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, fallocate_exec, fallocate_done, j, &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    free(j);
    return cove_throw(env, "fallocate: cannot queue async work");
  }
  return promise;
}
COVE_EXPORT(fallocateAsync, fallocate_async_js)

/* preadvNowait(fd, buffers, position) / pwritevNowait(...) -> bytes, or -1 when the call would
 * block (RWF_NOWAIT: data not in the page cache, or the filesystem cannot promise not to block).
 * Never waits for a disk, so it may run on the event loop: the common cached case skips the thread
 * pool round trip, and the caller falls back to thread-pool I/O on -1 or a short count. */
#define COVE_MAX_IOV 1024
static napi_value rw_nowait(napi_env env, napi_callback_info info, int write) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t pos;
  uint32_t n;
  struct iovec iov[COVE_MAX_IOV];
  if (argc < 3 || cove_arg_int32(env, argv[0], &fd) || cove_arg_int64(env, argv[2], &pos) ||
      cove_arg_iovec(env, argv[1], iov, COVE_MAX_IOV, &n))
    return NULL;
  ssize_t r = write ? pwritev2(fd, iov, (int)n, pos, RWF_NOWAIT) : preadv2(fd, iov, (int)n, pos, RWF_NOWAIT);
  if (r < 0) {
    if (errno == EAGAIN || errno == EOPNOTSUPP || errno == EINTR) return cove_int32(env, -1);
    return cove_throw_errno(env, errno, write ? "pwritev2" : "preadv2");
  }
  napi_value out;
  napi_create_double(env, (double)r, &out);
  return out;
}
static napi_value preadv_nowait(napi_env env, napi_callback_info info) { return rw_nowait(env, info, 0); }
static napi_value pwritev_nowait(napi_env env, napi_callback_info info) { return rw_nowait(env, info, 1); }
COVE_EXPORT(preadvNowait, preadv_nowait)
COVE_EXPORT(pwritevNowait, pwritev_nowait)

/* blockDeviceSize(fd) -> bytes (BLKGETSIZE64) */
static napi_value block_device_size(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) return cove_throw_errno(env, errno, "ioctl(BLKGETSIZE64)");
  napi_value r;
  napi_create_double(env, (double)size, &r);
  return r;
}
COVE_EXPORT(blockDeviceSize, block_device_size)
