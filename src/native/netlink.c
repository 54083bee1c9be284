/* rtnetlink sockets for the guest agent (and tests): open a NETLINK_ROUTE socket, optionally inside
 * another network namespace, and move whole datagrams through it. Message encoding and decoding
 * stay in TypeScript (src/native/netlink.ts, agent/src/network/).
 *
 * The socket is made on a short-lived pthread that setns()es first (as tap.c does): a netlink
 * socket belongs to the namespace it was created in, and Node's own threads never leave theirs.
 * It is blocking with a receive timeout: the kernel answers rtnetlink requests inside sendmsg (or
 * builds a dump on each recv), so a reply is always already there or coming at once. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

typedef struct {
  const char *netns; /* NULL: the caller's namespace */
  int timeout_ms;
  int fd;
  int err;
  const char *step;
} nl_job;

static void *nl_open_thread(void *arg) {
  nl_job *j = arg;
  j->fd = -1;
  if (cove_enter_netns(j->netns, &j->err, &j->step)) return NULL;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    j->err = errno;
    j->step = "socket(AF_NETLINK, NETLINK_ROUTE)";
    return NULL;
  }
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    j->err = errno;
    j->step = "bind(netlink)";
    close(fd);
    return NULL;
  }
  /* Errors carry the kernel's text (extended ack) and not a copy of our request. Best effort:
   * older kernels answer without them. */
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  struct timeval tv = {.tv_sec = j->timeout_ms / 1000, .tv_usec = (j->timeout_ms % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    j->err = errno;
    j->step = "setsockopt(SO_RCVTIMEO)";
    close(fd);
    return NULL;
  }
  j->fd = fd;
  return NULL;
}

/* netlinkOpen(netnsPath | null, timeoutMs) -> fd (close-on-exec, blocking, receive timeout). */
static napi_value netlink_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return cove_throw(env, "netlinkOpen(netns, timeoutMs)");
  nl_job j;
  memset(&j, 0, sizeof j);
  char netns[4096];
  if (cove_arg_netns(env, argv[0], netns, sizeof netns, &j.netns)) return NULL;
  int32_t timeout;
  if (cove_arg_int32(env, argv[1], &timeout)) return NULL;
  if (timeout <= 0) return cove_throw(env, "timeoutMs must be positive");
  j.timeout_ms = timeout;
  pthread_t th;
  int r = pthread_create(&th, NULL, nl_open_thread, &j);
  if (r != 0) return cove_throw_errno(env, r, "pthread_create");
  pthread_join(th, NULL);
  if (j.fd < 0) return cove_throw_errno(env, j.err, j.step);
  return cove_int32(env, j.fd);
}
COVE_EXPORT(netlinkOpen, netlink_open)

/* netlinkSend(fd, bytes) -> bytes sent (to the kernel, pid 0). One call = one datagram. */
static napi_value netlink_send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  void *data;
  size_t len;
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd) || cove_arg_bytes(env, argv[1], &data, &len)) return NULL;
  struct sockaddr_nl to;
  memset(&to, 0, sizeof to);
  to.nl_family = AF_NETLINK;
  ssize_t r;
  do {
    r = sendto(fd, data, len, 0, (struct sockaddr *)&to, sizeof to);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return cove_throw_errno(env, errno, "sendto(netlink)");
  return cove_int32(env, (int32_t)r);
}
COVE_EXPORT(netlinkSend, netlink_send)

/* netlinkRecv(fd, buffer) -> bytes of one datagram. Throws EMSGSIZE if the datagram did not fit
 * (a cut netlink message cannot be parsed), EAGAIN when the receive timeout passed. Datagrams not
 * from the kernel (nl_pid != 0) are skipped. */
static napi_value netlink_recv(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  void *data;
  size_t len;
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd) || cove_arg_bytes(env, argv[1], &data, &len)) return NULL;
  for (;;) {
    struct sockaddr_nl from;
    struct iovec iov = {.iov_base = data, .iov_len = len};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t r = recvmsg(fd, &mh, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return cove_throw_errno(env, errno == EWOULDBLOCK ? EAGAIN : errno, "recvmsg(netlink)");
    }
    if (mh.msg_flags & MSG_TRUNC) return cove_throw_errno(env, EMSGSIZE, "recvmsg(netlink): datagram truncated");
    if (mh.msg_namelen >= sizeof from && from.nl_pid != 0) continue;
    return cove_int32(env, (int32_t)r);
  }
}
COVE_EXPORT(netlinkRecv, netlink_recv)
