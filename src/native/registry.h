/* Self-registration of addon functions, so each area (mount, fds, kvm, ...) lives in its own file
 * and binding.gyp never needs editing. Usage, at file scope:
 *   static napi_value my_fn(napi_env env, napi_callback_info info) { ... }
 *   COVE_EXPORT(myFn, my_fn)
 */
#ifndef COVE_NATIVE_REGISTRY_H
#define COVE_NATIVE_REGISTRY_H
#include <node_api.h>
#include <sys/uio.h>

typedef struct cove_export {
  const char *name;
  napi_callback fn;
  struct cove_export *next;
} cove_export;

void cove_register(cove_export *e);

#define COVE_EXPORT(js_name, c_fn)                                               \
  static cove_export cove_export_##c_fn = {#js_name, c_fn, 0};                  \
  __attribute__((constructor)) static void cove_register_##c_fn(void) {         \
    cove_register(&cove_export_##c_fn);                                         \
  }

/* Helpers shared by every area. They throw a JS Error (with .code = errno name) and return NULL. */
napi_value cove_throw_errno(napi_env env, int err, const char *syscall);
napi_value cove_throw(napi_env env, const char *msg);
int cove_arg_int32(napi_env env, napi_value v, int32_t *out);
int cove_arg_uint32(napi_env env, napi_value v, uint32_t *out);
int cove_arg_int64(napi_env env, napi_value v, int64_t *out);
/* Copies a JS string into buf (NUL-terminated); returns 0 on success, -1 (and throws) if too long. */
int cove_arg_string(napi_env env, napi_value v, char *buf, size_t len);
/* A Uint8Array (Buffer included) as pointer + length; anything else throws "expected a Uint8Array". */
int cove_arg_bytes(napi_env env, napi_value v, void **data, size_t *len);
/* An array of 1..max Uint8Arrays as an iovec (iov has room for max); sets *n. */
int cove_arg_iovec(napi_env env, napi_value v, struct iovec *iov, uint32_t max, uint32_t *n);
/* An optional string: copied into buf (*out = buf), or *out = NULL for null/undefined. */
int cove_arg_opt_string(napi_env env, napi_value v, char *buf, size_t len, const char **out);
/* A network namespace argument: a path (copied into buf, *path = buf) or null/undefined (*path = NULL). */
int cove_arg_netns(napi_env env, napi_value v, char *buf, size_t len, const char **path);
/* For a short-lived pthread about to make a namespaced object (tap, netlink socket): setns() this
 * thread into the network namespace at path (NULL: stay). Returns 0, or -1 with *err / *step set. */
int cove_enter_netns(const char *path, int *err, const char **step);
/* Closes fd (a half-set-up resource) and throws the errno that was current before the close. */
napi_value cove_close_throw_errno(napi_env env, int fd, const char *syscall);
napi_value cove_int32(napi_env env, int32_t v);
/* [a, b] as a JS array (fd pairs, rows/cols). */
napi_value cove_int32_pair(napi_env env, int32_t a, int32_t b);
napi_value cove_undefined(napi_env env);

#endif
