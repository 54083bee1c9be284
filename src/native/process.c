/* Process-level syscalls Node lacks: used by the shim daemon (subreaper) and by tests. */
#include "registry.h"
#include <errno.h>
#include <sys/prctl.h>

static napi_value set_child_subreaper(napi_env env, napi_callback_info info) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return cove_throw_errno(env, errno, "prctl(PR_SET_CHILD_SUBREAPER)");
  return cove_undefined(env);
}
COVE_EXPORT(setChildSubreaper, set_child_subreaper)
