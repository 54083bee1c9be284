/* eventfd(2): vhost-user kick (guest → device) and call (device → guest) notifiers. */
#include "registry.h"
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* eventfdCreate() -> fd (non-blocking, close-on-exec) */
static napi_value eventfd_create(napi_env env, napi_callback_info info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return cove_throw_errno(env, errno, "eventfd");
  return cove_int32(env, fd);
}
COVE_EXPORT(eventfdCreate, eventfd_create)

/* eventfdRead(fd) -> counter value (a number), or 0 if it was not signalled. */
static napi_value eventfd_read_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  uint64_t v = 0;
  ssize_t n = read(fd, &v, sizeof v);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) v = 0;
    else return cove_throw_errno(env, errno, "read(eventfd)");
  }
  napi_value r;
  napi_create_double(env, (double)v, &r);
  return r;
}
COVE_EXPORT(eventfdRead, eventfd_read_js)

/* eventfdWrite(fd): adds 1 (an interrupt or a kick). A full counter (EAGAIN) already means "signalled". */
static napi_value eventfd_write_js(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  uint64_t one = 1;
  if (write(fd, &one, sizeof one) < 0 && errno != EAGAIN && errno != EINTR) return cove_throw_errno(env, errno, "write(eventfd)");
  return cove_undefined(env);
}
COVE_EXPORT(eventfdWrite, eventfd_write_js)
