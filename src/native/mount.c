/* PID-1 syscalls Node lacks: mount/umount2, reboot, sethostname, and a non-blocking waitpid for one
 * pid (the agent decides which zombies are its own to reap; see agent/src/pid1/reaper.ts). */
#include "registry.h"
#include <errno.h>
#include <string.h>
#include <linux/reboot.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATH_LEN 4096
#define DATA_LEN 4096

/* mount(source, target, fstype, flags, data): source, fstype and data may be null (mount(2) takes NULL there). */
static napi_value cove_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return cove_throw(env, "mount(source, target, fstype, flags, data?)");
  char source[PATH_LEN], target[PATH_LEN], fstype[256], data[DATA_LEN];
  const char *src, *fs, *dat = NULL;
  uint32_t flags;
  if (cove_arg_opt_string(env, argv[0], source, sizeof source, &src) != 0) return NULL;
  if (cove_arg_string(env, argv[1], target, sizeof target) != 0) return NULL;
  if (cove_arg_opt_string(env, argv[2], fstype, sizeof fstype, &fs) != 0) return NULL;
  if (cove_arg_uint32(env, argv[3], &flags) != 0) return NULL;
  if (argc >= 5 && cove_arg_opt_string(env, argv[4], data, sizeof data, &dat) != 0) return NULL;
  if (mount(src, target, fs, flags, dat) != 0) return cove_throw_errno(env, errno, "mount");
  return cove_undefined(env);
}
COVE_EXPORT(mount, cove_mount)

/* umount2(target, flags) */
static napi_value cove_umount2(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return cove_throw(env, "umount2(target, flags)");
  char target[PATH_LEN];
  int32_t flags;
  if (cove_arg_string(env, argv[0], target, sizeof target) != 0) return NULL;
  if (cove_arg_int32(env, argv[1], &flags) != 0) return NULL;
  if (umount2(target, flags) != 0) return cove_throw_errno(env, errno, "umount2");
  return cove_undefined(env);
}
COVE_EXPORT(umount2, cove_umount2)

/* reboot(cmd): sync first, then power off / restart. Only returns on error. */
static napi_value cove_reboot(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t cmd;
  if (argc < 1) return cove_throw(env, "reboot(cmd)");
  if (cove_arg_uint32(env, argv[0], &cmd) != 0) return NULL;
  if (cmd != LINUX_REBOOT_CMD_RESTART && cmd != LINUX_REBOOT_CMD_POWER_OFF && cmd != LINUX_REBOOT_CMD_HALT)
    return cove_throw(env, "reboot: cmd must be RESTART, POWER_OFF or HALT");
  sync();
  if (reboot((int)cmd) != 0) return cove_throw_errno(env, errno, "reboot");
  return cove_undefined(env);
}
COVE_EXPORT(reboot, cove_reboot)

/* sethostname(name) */
static napi_value cove_sethostname(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return cove_throw(env, "sethostname(name)");
  char name[65];
  if (cove_arg_string(env, argv[0], name, sizeof name) != 0) return NULL;
  if (sethostname(name, strlen(name)) != 0) return cove_throw_errno(env, errno, "sethostname");
  return cove_undefined(env);
}
COVE_EXPORT(sethostname, cove_sethostname)

/* waitpidNoHang(pid) -> null while the child runs, else { pid, exitCode, signal } (one of them null).
 * Reaps exactly that pid: never -1, so children libuv owns are never stolen from it. */
static napi_value cove_waitpid_nohang(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t pid;
  if (argc < 1) return cove_throw(env, "waitpidNoHang(pid)");
  if (cove_arg_int32(env, argv[0], &pid) != 0) return NULL;
  if (pid <= 0) return cove_throw(env, "waitpidNoHang: pid must be > 0");
  int status = 0;
  pid_t r;
  do r = waitpid(pid, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r < 0) return cove_throw_errno(env, errno, "waitpid");
  napi_value out, nul;
  napi_get_null(env, &nul);
  if (r == 0) return nul;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "pid", cove_int32(env, r));
  napi_set_named_property(env, out, "exitCode", WIFEXITED(status) ? cove_int32(env, WEXITSTATUS(status)) : nul);
  napi_set_named_property(env, out, "signal", WIFSIGNALED(status) ? cove_int32(env, WTERMSIG(status)) : nul);
  return out;
}
COVE_EXPORT(waitpidNoHang, cove_waitpid_nohang)
