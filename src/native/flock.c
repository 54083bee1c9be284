/* flock(2) without blocking: Node has no file locks, and a lock the kernel drops when its holder
 * dies is what a cache shared by many shim processes needs (src/guest/lock.ts). */
#include "registry.h"
#include <errno.h>
#include <sys/file.h>

/* tryLock(fd): true when this open file description now holds LOCK_EX, false when another holds it. */
static napi_value try_lock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return cove_throw(env, "tryLock(fd): fd required");
  int32_t fd;
  if (cove_arg_int32(env, argv[0], &fd) != 0) return NULL;
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r != 0 && errno == EINTR);
  napi_value out;
  if (r == 0) {
    napi_get_boolean(env, true, &out);
    return out;
  }
  if (errno == EWOULDBLOCK) {
    napi_get_boolean(env, false, &out);
    return out;
  }
  return cove_throw_errno(env, errno, "flock");
}
COVE_EXPORT(tryLock, try_lock)
