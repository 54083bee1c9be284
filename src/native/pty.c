/* Process stdio helpers: pty window size (TIOCSWINSZ/TIOCGWINSZ) for a pty master that crun handed
 * over, non-blocking mode, openpty for tests, and pipes for non-terminal stdio. The agent copies bytes itself. */
#include "registry.h"
#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

/* ptySetWinsize(fd, rows, cols) */
static napi_value pty_set_winsize(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  uint32_t rows, cols;
  if (argc < 3 || cove_arg_int32(env, argv[0], &fd) || cove_arg_uint32(env, argv[1], &rows) ||
      cove_arg_uint32(env, argv[2], &cols))
    return NULL;
  if (rows > 0xffff || cols > 0xffff) return cove_throw(env, "ptySetWinsize: rows and cols must fit in 16 bits");
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) return cove_throw_errno(env, errno, "ioctl(TIOCSWINSZ)");
  return cove_undefined(env);
}
COVE_EXPORT(ptySetWinsize, pty_set_winsize)

/* ptyGetWinsize(fd) -> [rows, cols] */
static napi_value pty_get_winsize(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return cove_throw_errno(env, errno, "ioctl(TIOCGWINSZ)");
  return cove_int32_pair(env, ws.ws_row, ws.ws_col);
}
COVE_EXPORT(ptyGetWinsize, pty_get_winsize)

/* openPty() -> [master, slave], both close-on-exec, master non-blocking */
static napi_value open_pty(napi_env env, napi_callback_info info) {
  int m, s;
  if (openpty(&m, &s, NULL, NULL, NULL) != 0) return cove_throw_errno(env, errno, "openpty");
  fcntl(m, F_SETFD, FD_CLOEXEC);
  fcntl(s, F_SETFD, FD_CLOEXEC);
  fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
  return cove_int32_pair(env, m, s);
}
COVE_EXPORT(openPty, open_pty)

/* setNonBlocking(fd, on) */
static napi_value set_non_blocking(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  bool on = true;
  if (argc < 1 || cove_arg_int32(env, argv[0], &fd)) return NULL;
  if (argc > 1) napi_get_value_bool(env, argv[1], &on);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0)
    return cove_throw_errno(env, errno, "fcntl(O_NONBLOCK)");
  return cove_undefined(env);
}
COVE_EXPORT(setNonBlocking, set_non_blocking)

/* makePipe(sizeBytes) -> [readFd, writeFd], close-on-exec, blocking (the child gets one end as
 * its stdio; the agent wraps the other). sizeBytes > 0 asks for a bigger pipe buffer
 * (F_SETPIPE_SZ, best effort): fewer wakeups per MiB of container output. */
static napi_value make_pipe(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t size = 0;
  if (argc > 0 && cove_arg_int32(env, argv[0], &size)) return NULL;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return cove_throw_errno(env, errno, "pipe2");
  if (size > 0) fcntl(fds[1], F_SETPIPE_SZ, size);
  return cove_int32_pair(env, fds[0], fds[1]);
}
COVE_EXPORT(makePipe, make_pipe)
