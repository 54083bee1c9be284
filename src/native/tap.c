/* Tap devices for virtio-net: create a tap inside another network namespace and move frames
 * through its fd without blocking.
 *
 * A tap's netdev is created in the namespace of the thread that opened /dev/net/tun, so the open
 * and TUNSETIFF run on a short-lived pthread that setns()es into the pod's namespace first:
 * Node's own threads never leave the host namespace. The fd works from any namespace afterwards.
 * The tap is not persistent: it disappears when its last fd is closed (a crashed shim leaves
 * nothing behind). */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct {
  const char *netns; /* NULL: the caller's namespace */
  char name[IFNAMSIZ];
  int flags;
  int vnet_hdr_sz;
  int fd;
  int err;
  const char *step;
} tap_job;

static void *tap_open_thread(void *arg) {
  tap_job *j = arg;
  j->fd = -1;
  if (cove_enter_netns(j->netns, &j->err, &j->step)) return NULL;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    j->err = errno;
    j->step = "open(/dev/net/tun)";
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  /* IFF_TUN_EXCL: never attach to a tap someone else made under the same name. */
  ifr.ifr_flags = (short)(j->flags | IFF_TUN_EXCL);
  memcpy(ifr.ifr_name, j->name, IFNAMSIZ);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    j->err = errno;
    j->step = "ioctl(TUNSETIFF)";
    close(fd);
    return NULL;
  }
  if ((j->flags & IFF_VNET_HDR) && ioctl(fd, TUNSETVNETHDRSZ, &j->vnet_hdr_sz) != 0) {
    j->err = errno;
    j->step = "ioctl(TUNSETVNETHDRSZ)";
    close(fd);
    return NULL;
  }
  memcpy(j->name, ifr.ifr_name, IFNAMSIZ);
  j->name[IFNAMSIZ - 1] = 0;
  j->fd = fd;
  return NULL;
}

/* tapOpen(name, netnsPath | null, vnetHdrSize) -> [fd, actualName]. The tap is IFF_TAP | IFF_NO_PI
 * | IFF_VNET_HDR with the given header size (12 for virtio 1.0's virtio_net_hdr_v1); a name with
 * "%d" lets the kernel pick the number. */
static napi_value tap_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) return cove_throw(env, "tapOpen(name, netns, vnetHdrSize)");
  tap_job j;
  memset(&j, 0, sizeof j);
  if (cove_arg_string(env, argv[0], j.name, IFNAMSIZ)) return NULL;
  char netns[4096];
  if (cove_arg_netns(env, argv[1], netns, sizeof netns, &j.netns)) return NULL;
  int32_t hdr;
  if (cove_arg_int32(env, argv[2], &hdr)) return NULL;
  j.vnet_hdr_sz = hdr;
  j.flags = IFF_TAP | IFF_NO_PI | (hdr > 0 ? IFF_VNET_HDR : 0);
  pthread_t th;
  int r = pthread_create(&th, NULL, tap_open_thread, &j);
  if (r != 0) return cove_throw_errno(env, r, "pthread_create");
  pthread_join(th, NULL);
  if (j.fd < 0) return cove_throw_errno(env, j.err, j.step);
  napi_value out, fdv, namev;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, j.fd, &fdv);
  napi_create_string_utf8(env, j.name, NAPI_AUTO_LENGTH, &namev);
  napi_set_element(env, out, 0, fdv);
  napi_set_element(env, out, 1, namev);
  return out;
}
COVE_EXPORT(tapOpen, tap_open)

/* tapSetOffload(fd, TUN_F_* flags): which offloads the reader (the guest) accepts in frames it gets. */
static napi_value tap_set_offload(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  uint32_t flags;
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd) || cove_arg_uint32(env, argv[1], &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) != 0) return cove_throw_errno(env, errno, "ioctl(TUNSETOFFLOAD)");
  return cove_undefined(env);
}
COVE_EXPORT(tapSetOffload, tap_set_offload)

/* tapVnetHdrSize(fd) -> bytes (TUNGETVNETHDRSZ). */
static napi_value tap_vnet_hdr_size(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  int sz = 0;
  if (ioctl(fd, TUNGETVNETHDRSZ, &sz) != 0) return cove_throw_errno(env, errno, "ioctl(TUNGETVNETHDRSZ)");
  return cove_int32(env, sz);
}
COVE_EXPORT(tapVnetHdrSize, tap_vnet_hdr_size)

/* tapReadv(fd, buffers) / tapWritev(fd, buffers) -> bytes, or -1 when the call would block.
 * One call moves exactly one frame (a tap is a datagram device). */
#define TAP_MAX_IOV 1024
static napi_value tap_rw(napi_env env, napi_callback_info info, int write) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  uint32_t n;
  struct iovec iov[TAP_MAX_IOV];
  if (argc < 2 || cove_arg_int32(env, argv[0], &fd) || cove_arg_iovec(env, argv[1], iov, TAP_MAX_IOV, &n)) return NULL;
  ssize_t r;
  do {
    r = write ? writev(fd, iov, (int)n) : readv(fd, iov, (int)n);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return cove_int32(env, -1);
    return cove_throw_errno(env, errno, write ? "writev(tap)" : "readv(tap)");
  }
  return cove_int32(env, (int32_t)r);
}
static napi_value tap_readv(napi_env env, napi_callback_info info) { return tap_rw(env, info, 0); }
static napi_value tap_writev(napi_env env, napi_callback_info info) { return tap_rw(env, info, 1); }
COVE_EXPORT(tapReadv, tap_readv)
COVE_EXPORT(tapWritev, tap_writev)
