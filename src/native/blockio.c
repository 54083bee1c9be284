/* Block-backing syscalls Node lacks: fallocate (discard / write-zeroes) and a block device's size. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* fallocate(fd, mode, offset, length) */
static napi_value fallocate_js(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd, mode;
  int64_t off, len;
  if (argc < 4 || cove_arg_int32(env, argv[0], &fd) || cove_arg_int32(env, argv[1], &mode) ||
      cove_arg_int64(env, argv[2], &off) || cove_arg_int64(env, argv[3], &len))
    return NULL;
  if (fallocate(fd, mode, off, len) != 0) return cove_throw_errno(env, errno, "fallocate");
  return cove_undefined(env);
}
COVE_EXPORT(fallocate, fallocate_js)

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
