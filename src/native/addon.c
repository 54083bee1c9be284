/* Addon entry point: exports every function registered with COVE_EXPORT, and the helpers every
 * area shares (declared in registry.h). */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static cove_export *cove_exports = 0;

void cove_register(cove_export *e) {
  e->next = cove_exports;
  cove_exports = e;
}

static const char *errno_name(int err) {
  switch (err) {
  case EPERM: return "EPERM";
  case ENOENT: return "ENOENT";
  case EINTR: return "EINTR";
  case EIO: return "EIO";
  case EBADF: return "EBADF";
  case EAGAIN: return "EAGAIN";
  case ENOMEM: return "ENOMEM";
  case EACCES: return "EACCES";
  case EFAULT: return "EFAULT";
  case EBUSY: return "EBUSY";
  case EEXIST: return "EEXIST";
  case ENODEV: return "ENODEV";
  case ENOTDIR: return "ENOTDIR";
  case EINVAL: return "EINVAL";
  case ENOSPC: return "ENOSPC";
  case ENOSYS: return "ENOSYS";
  case ENOTSUP: return "ENOTSUP";
  case ECONNREFUSED: return "ECONNREFUSED";
  case ECONNRESET: return "ECONNRESET";
  case EADDRINUSE: return "EADDRINUSE";
  case ENXIO: return "ENXIO";
  case E2BIG: return "E2BIG";
  case ERANGE: return "ERANGE";
  case EMSGSIZE: return "EMSGSIZE";
  case ECHILD: return "ECHILD";
  case ESRCH: return "ESRCH";
  case EPIPE: return "EPIPE";
  case ENOTCONN: return "ENOTCONN";
  case ETIMEDOUT: return "ETIMEDOUT";
  case EMFILE: return "EMFILE";
  case EROFS: return "EROFS";
  case ENOTTY: return "ENOTTY";
  case ELOOP: return "ELOOP";
  default: return "EUNKNOWN";
  }
}

napi_value cove_throw_errno(napi_env env, int err, const char *syscall) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s (%s)", syscall, strerror(err), errno_name(err));
  napi_value code, message, error, errnum, sc;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
  return NULL;
}

napi_value cove_throw(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

int cove_arg_int32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    cove_throw(env, "expected a number");
    return -1;
  }
  return 0;
}

int cove_arg_uint32(napi_env env, napi_value v, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    cove_throw(env, "expected a number");
    return -1;
  }
  return 0;
}

int cove_arg_int64(napi_env env, napi_value v, int64_t *out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_bigint) {
    bool lossless;
    if (napi_get_value_bigint_int64(env, v, out, &lossless) != napi_ok) return cove_throw(env, "bad bigint"), -1;
    return 0;
  }
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    cove_throw(env, "expected a number or bigint");
    return -1;
  }
  return 0;
}

int cove_arg_string(napi_env env, napi_value v, char *buf, size_t len) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return cove_throw(env, "expected a string"), -1;
  if (n + 1 > len) return cove_throw(env, "string too long"), -1;
  napi_get_value_string_utf8(env, v, buf, len, &n);
  return 0;
}

int cove_arg_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  bool ok = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_is_typedarray(env, v, &ok) != napi_ok || !ok) return cove_throw(env, "expected a Uint8Array"), -1;
  napi_get_typedarray_info(env, v, &type, len, data, &ab, &off);
  if (type != napi_uint8_array) return cove_throw(env, "expected a Uint8Array"), -1;
  return 0;
}

int cove_arg_iovec(napi_env env, napi_value v, struct iovec *iov, uint32_t max, uint32_t *n) {
  bool is_array = false;
  if (napi_is_array(env, v, &is_array) != napi_ok || !is_array) return cove_throw(env, "expected an array of buffers"), -1;
  napi_get_array_length(env, v, n);
  if (*n == 0 || *n > max) return cove_throw(env, "buffer count out of range"), -1;
  for (uint32_t i = 0; i < *n; i++) {
    napi_value el, ab;
    napi_typedarray_type type;
    size_t len, off;
    void *data;
    bool ok = false;
    napi_get_element(env, v, i, &el);
    if (napi_is_typedarray(env, el, &ok) != napi_ok || !ok) return cove_throw(env, "expected Uint8Array buffers"), -1;
    napi_get_typedarray_info(env, el, &type, &len, &data, &ab, &off);
    if (type != napi_uint8_array) return cove_throw(env, "expected Uint8Array buffers"), -1;
    iov[i].iov_base = data;
    iov[i].iov_len = len;
  }
  return 0;
}

int cove_arg_opt_string(napi_env env, napi_value v, char *buf, size_t len, const char **out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) {
    *out = NULL;
    return 0;
  }
  if (cove_arg_string(env, v, buf, len) != 0) return -1;
  *out = buf;
  return 0;
}

int cove_arg_netns(napi_env env, napi_value v, char *buf, size_t len, const char **path) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string && t != napi_null && t != napi_undefined) return cove_throw(env, "netns must be a path or null"), -1;
  return cove_arg_opt_string(env, v, buf, len, path);
}

int cove_enter_netns(const char *path, int *err, const char **step) {
  if (!path) return 0;
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) {
    *err = errno;
    *step = "open(netns)";
    return -1;
  }
  /* This thread only: it ends right after, so its namespace dies with it. */
  int r = setns(ns, CLONE_NEWNET);
  int e = errno;
  close(ns);
  if (r != 0) {
    *err = e;
    *step = "setns(CLONE_NEWNET)";
    return -1;
  }
  return 0;
}

napi_value cove_close_throw_errno(napi_env env, int fd, const char *syscall) {
  int e = errno;
  close(fd);
  return cove_throw_errno(env, e, syscall);
}

napi_value cove_int32(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

napi_value cove_int32_pair(napi_env env, int32_t a, int32_t b) {
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, cove_int32(env, a));
  napi_set_element(env, arr, 1, cove_int32(env, b));
  return arr;
}

napi_value cove_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  for (cove_export *e = cove_exports; e; e = e->next) {
    napi_value fn;
    napi_create_function(env, e->name, NAPI_AUTO_LENGTH, e->fn, NULL, &fn);
    napi_set_named_property(env, exports, e->name, fn);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
