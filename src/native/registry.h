/* Self-registration of addon functions, so each area (mount, fds, kvm, ...) lives in its own file
 * and binding.gyp never needs editing. Usage, at file scope:
 *   static napi_value my_fn(napi_env env, napi_callback_info info) { ... }
 *   COVE_EXPORT(myFn, my_fn)
 */
#ifndef COVE_NATIVE_REGISTRY_H
#define COVE_NATIVE_REGISTRY_H
#include <node_api.h>

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
napi_value cove_int32(napi_env env, int32_t v);
napi_value cove_undefined(napi_env env);

#endif
