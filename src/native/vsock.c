/* AF_VSOCK sockets (Node's net module knows only TCP and Unix sockets). The fds returned here are
 * non-blocking and close-on-exec; src/native/vsock.ts wraps them into net.Server / net.Socket
 * through libuv's pipe handle, which accepts, reads and writes any stream socket. */
#include "registry.h"
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

static void make_addr(struct sockaddr_vm *a, uint32_t cid, uint32_t port) {
  memset(a, 0, sizeof *a);
  a->svm_family = AF_VSOCK;
  a->svm_cid = cid;
  a->svm_port = port;
}

/* vsockListen(port, backlog) -> fd, bound to VMADDR_CID_ANY:port and listening */
static napi_value vsock_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t port;
  int32_t backlog = 128;
  if (argc < 1 || cove_arg_uint32(env, argv[0], &port)) return NULL;
  if (argc > 1 && cove_arg_int32(env, argv[1], &backlog)) return NULL;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return cove_throw_errno(env, errno, "socket(AF_VSOCK)");
  struct sockaddr_vm a;
  make_addr(&a, VMADDR_CID_ANY, port);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) return cove_close_throw_errno(env, fd, "bind(AF_VSOCK)");
  if (listen(fd, backlog) != 0) return cove_close_throw_errno(env, fd, "listen(AF_VSOCK)");
  return cove_int32(env, fd);
}
COVE_EXPORT(vsockListen, vsock_listen)

/* vsockConnect(cid, port) -> fd; non-blocking connect: the connection may still be in progress
 * (wait for writability, then check socketError). */
static napi_value vsock_connect(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t cid, port;
  if (argc < 2 || cove_arg_uint32(env, argv[0], &cid) || cove_arg_uint32(env, argv[1], &port)) return NULL;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return cove_throw_errno(env, errno, "socket(AF_VSOCK)");
  struct sockaddr_vm a;
  make_addr(&a, cid, port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
    return cove_close_throw_errno(env, fd, "connect(AF_VSOCK)");
  return cove_int32(env, fd);
}
COVE_EXPORT(vsockConnect, vsock_connect)

/* socketError(fd) -> the pending SO_ERROR (0 = connected) */
static napi_value socket_error(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return cove_throw_errno(env, errno, "getsockopt(SO_ERROR)");
  return cove_int32(env, err);
}
COVE_EXPORT(socketError, socket_error)

/* vsockLocalCid() -> this machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock), or -1 */
#include <fcntl.h>
#include <sys/ioctl.h>
static napi_value vsock_local_cid(napi_env env, napi_callback_info info) {
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cove_int32(env, -1);
  uint32_t cid = 0;
  int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  close(fd);
  return cove_int32(env, r == 0 ? (int32_t)cid : -1);
}
COVE_EXPORT(vsockLocalCid, vsock_local_cid)
