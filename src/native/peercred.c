/* SO_PEERCRED on a connected unix socket: Node has no API for the peer's pid/uid/gid, and the shim
 * must only serve peers with its own uid and gid (as containerd's Go shim does). */
#include "registry.h"
#include <errno.h>
#include <sys/socket.h>

static napi_value peer_cred(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return cove_throw(env, "peerCred(fd): fd required");
  int32_t fd;
  if (cove_arg_int32(env, argv[0], &fd) != 0) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return cove_throw_errno(env, errno, "getsockopt(SO_PEERCRED)");
  napi_value out;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "pid", cove_int32(env, cred.pid));
  napi_set_named_property(env, out, "uid", cove_int32(env, (int32_t)cred.uid));
  napi_set_named_property(env, out, "gid", cove_int32(env, (int32_t)cred.gid));
  return out;
}
COVE_EXPORT(peerCred, peer_cred)
