/* mmap of fds received from QEMU (guest RAM as shared memfds), exposed to JS as an external
 * ArrayBuffer that is unmapped when collected; memfd_create for tests and tools. */
#include "registry.h"
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>


static void unmap(napi_env env, void *data, void *hint) {
  size_t len = (size_t)(uintptr_t)hint;
  munmap(data, len);
}

/* mmapFd(fd, length, offset, writable) -> ArrayBuffer (MAP_SHARED) */
static napi_value mmap_fd(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t len, off;
  bool writable = true;
  if (argc < 3 || cove_arg_int32(env, argv[0], &fd) || cove_arg_int64(env, argv[1], &len) ||
      cove_arg_int64(env, argv[2], &off))
    return NULL;
  if (argc > 3) napi_get_value_bool(env, argv[3], &writable);
  if (len <= 0 || off < 0) return cove_throw(env, "mmapFd: bad length or offset");
  void *p = mmap(NULL, (size_t)len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, (off_t)off);
  if (p == MAP_FAILED) return cove_throw_errno(env, errno, "mmap");
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, (size_t)len, unmap, (void *)(uintptr_t)len, &ab) != napi_ok) {
    munmap(p, (size_t)len);
    return cove_throw(env, "napi_create_external_arraybuffer failed");
  }
  return ab;
}
COVE_EXPORT(mmapFd, mmap_fd)

/* memfdCreate(name, size) -> fd (close-on-exec, truncated to size) */
static napi_value memfd_create_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char name[64];
  int64_t size;
  if (argc < 2 || cove_arg_string(env, argv[0], name, sizeof name) || cove_arg_int64(env, argv[1], &size)) return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return cove_throw_errno(env, errno, "memfd_create");
  if (ftruncate(fd, size) != 0) return cove_close_throw_errno(env, fd, "ftruncate");
  return cove_int32(env, fd);
}
COVE_EXPORT(memfdCreate, memfd_create_js)
