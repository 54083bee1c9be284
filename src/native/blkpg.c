/* BLKPG partitions: the guest agent names each extent of a disk of extents (one virtio-blk disk
 * holding many layer images) as a partition of its own, with no partition table and no hotplug. */
#include "registry.h"
#include <errno.h>
#include <linux/blkpg.h>
#include <string.h>
#include <sys/ioctl.h>

/* blkpg(fd, op, pno, start, length): op 1 = add, 2 = delete; start/length in bytes. */
static napi_value blkpg_js(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) return cove_throw(env, "blkpg(fd, op, pno, start, length)");
  int32_t fd, op, pno;
  int64_t start, length;
  if (cove_arg_int32(env, argv[0], &fd) != 0 || cove_arg_int32(env, argv[1], &op) != 0 ||
      cove_arg_int32(env, argv[2], &pno) != 0 || cove_arg_int64(env, argv[3], &start) != 0 ||
      cove_arg_int64(env, argv[4], &length) != 0)
    return NULL;
  if (op != BLKPG_ADD_PARTITION && op != BLKPG_DEL_PARTITION) return cove_throw(env, "blkpg: op must be 1 (add) or 2 (delete)");
  struct blkpg_partition part;
  memset(&part, 0, sizeof part);
  part.start = start;
  part.length = length;
  part.pno = pno;
  struct blkpg_ioctl_arg arg = {.op = op, .flags = 0, .datalen = sizeof part, .data = &part};
  if (ioctl(fd, BLKPG, &arg) != 0) return cove_throw_errno(env, errno, "ioctl(BLKPG)");
  return cove_undefined(env);
}
COVE_EXPORT(blkpg, blkpg_js)
