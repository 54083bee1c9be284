/* Unix sockets with SCM_RIGHTS (vhost-user passes memory and eventfds this way; Node's net
 * module cannot receive fds). All sockets are non-blocking; readiness comes from pollStart. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 16

static int make_addr(napi_env env, napi_value v, struct sockaddr_un *a) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  return cove_arg_string(env, v, a->sun_path, sizeof a->sun_path);
}

/* unixListen(path, backlog) -> fd */
static napi_value unix_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct sockaddr_un a;
  int32_t backlog = 16;
  if (argc < 1 || make_addr(env, argv[0], &a)) return NULL;
  if (argc > 1 && cove_arg_int32(env, argv[1], &backlog)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return cove_throw_errno(env, errno, "socket");
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, backlog) != 0)
    return cove_close_throw_errno(env, fd, "bind/listen");
  return cove_int32(env, fd);
}
COVE_EXPORT(unixListen, unix_listen)

/* unixConnect(path) -> fd (connected, non-blocking) */
static napi_value unix_connect(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct sockaddr_un a;
  if (argc < 1 || make_addr(env, argv[0], &a)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return cove_throw_errno(env, errno, "socket");
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return cove_close_throw_errno(env, fd, "connect");
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return cove_int32(env, fd);
}
COVE_EXPORT(unixConnect, unix_connect)

/* unixAccept(listenFd) -> fd, or -1 when no connection is pending */
static napi_value unix_accept(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t lfd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &lfd)) return NULL;
  int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return cove_int32(env, -1);
    return cove_throw_errno(env, errno, "accept4");
  }
  return cove_int32(env, fd);
}
COVE_EXPORT(unixAccept, unix_accept)

/* recvWithFds(fd, buffer) -> [bytes, fds[]] ; bytes = 0 at EOF; null when nothing to read.
 * Received fds are close-on-exec. If the control data was truncated, the fds that did arrive
 * are closed and an EMSGSIZE error is thrown. */
static napi_value recv_with_fds(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  void *data;
  size_t len;
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) return cove_throw(env, "expected a Buffer");
  struct iovec iov = {data, len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof ctl.buf;
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      napi_value nul;
      napi_get_null(env, &nul);
      return nul;
    }
    return cove_throw_errno(env, errno, "recvmsg");
  }
  int fds[MAX_FDS];
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *p = (int *)CMSG_DATA(c);
    for (int i = 0; i < k; i++) {
      if (nfds < MAX_FDS) fds[nfds++] = p[i];
      else close(p[i]);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int i = 0; i < nfds; i++) close(fds[i]);
    return cove_throw_errno(env, EMSGSIZE, "recvmsg (too many fds)");
  }
  napi_value result, arr, v;
  napi_create_array_with_length(env, 2, &result);
  napi_create_array_with_length(env, nfds, &arr);
  for (int i = 0; i < nfds; i++) {
    napi_create_int32(env, fds[i], &v);
    napi_set_element(env, arr, i, v);
  }
  napi_create_int64(env, n, &v);
  napi_set_element(env, result, 0, v);
  napi_set_element(env, result, 1, arr);
  return result;
}
COVE_EXPORT(recvWithFds, recv_with_fds)

/* sendWithFds(fd, buffer, fds[]) -> bytes sent, or -1 if the socket buffer is full */
static napi_value send_with_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  void *data;
  size_t len;
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) return cove_throw(env, "expected a Buffer");
  uint32_t nfds = 0;
  int fds[MAX_FDS];
  if (argc > 2) {
    bool is_arr = false;
    napi_is_array(env, argv[2], &is_arr);
    if (is_arr) {
      napi_get_array_length(env, argv[2], &nfds);
      if (nfds > MAX_FDS) return cove_throw(env, "too many fds");
      for (uint32_t i = 0; i < nfds; i++) {
        napi_value v;
        napi_get_element(env, argv[2], i, &v);
        if (cove_arg_int32(env, v, &fds[i])) return NULL;
      }
    }
  }
  struct iovec iov = {data, len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return cove_int32(env, -1);
    return cove_throw_errno(env, errno, "sendmsg");
  }
  napi_value r;
  napi_create_int64(env, n, &r);
  return r;
}
COVE_EXPORT(sendWithFds, send_with_fds)

/* closeFd(fd): close(2), ignoring EINTR. */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) return cove_throw_errno(env, errno, "close");
  return cove_undefined(env);
}
COVE_EXPORT(closeFd, close_fd)
