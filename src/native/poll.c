/* Event-loop integration for raw fds (eventfds, the vhost-user socket): a libuv poll handle on
 * Node's own loop calls a JS function when the fd becomes readable/writable. The JS side then
 * does the non-blocking read itself. */
#include "registry.h"
#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
  napi_async_context ctx;
  int closing;
  int refs; /* the JS handle and the libuv handle each hold one */
} cove_poll;

static void release(cove_poll *p) {
  if (--p->refs == 0) free(p);
}

static void on_close(uv_handle_t *h) {
  release((cove_poll *)h->data);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  cove_poll *p = (cove_poll *)h->data;
  if (p->closing) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, p->cb, &cb);
  napi_get_global(env, &recv);
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  if (napi_make_callback(env, p->ctx, recv, cb, 2, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static void finalize_poll(napi_env env, void *data, void *hint) {
  /* The JS handle was collected: stop polling if the owner forgot to. */
  cove_poll *p = (cove_poll *)data;
  if (!p->closing) {
    p->closing = 1;
    napi_delete_reference(env, p->cb);
    napi_async_destroy(env, p->ctx);
    uv_close((uv_handle_t *)&p->poll, on_close);
  }
  release(p);
}

/* pollStart(fd, events, callback(status, events), keepAlive) -> handle. events: 1 = readable, 2 = writable. */
static napi_value poll_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd, events;
  if (argc < 3 || cove_arg_int32(env, argv[0], &fd) || cove_arg_int32(env, argv[1], &events)) return NULL;
  bool keep = true;
  if (argc > 3) napi_get_value_bool(env, argv[3], &keep);
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return cove_throw(env, "no event loop");
  cove_poll *p = calloc(1, sizeof *p);
  if (!p) return cove_throw(env, "out of memory");
  int r = uv_poll_init(loop, &p->poll, fd);
  if (r != 0) { /* not registered with the loop yet: plain free */
    free(p);
    return cove_throw_errno(env, -r, "uv_poll_init");
  }
  p->poll.data = p;
  p->env = env;
  p->refs = 2;
  napi_create_reference(env, argv[2], 1, &p->cb);
  napi_value name;
  napi_create_string_utf8(env, "cove.poll", NAPI_AUTO_LENGTH, &name);
  napi_value resource;
  napi_create_object(env, &resource);
  napi_async_init(env, resource, name, &p->ctx);
  int ev = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  r = uv_poll_start(&p->poll, ev, on_poll);
  if (r != 0) {
    p->closing = 1;
    napi_delete_reference(env, p->cb);
    napi_async_destroy(env, p->ctx);
    p->refs = 1;
    uv_close((uv_handle_t *)&p->poll, on_close);
    return cove_throw_errno(env, -r, "uv_poll_start");
  }
  if (!keep) uv_unref((uv_handle_t *)&p->poll);
  napi_value handle;
  napi_create_external(env, p, finalize_poll, NULL, &handle);
  return handle;
}
COVE_EXPORT(pollStart, poll_start)

/* pollUpdate(handle, events): change the watched events (e.g. add writable while output is queued). */
static napi_value poll_update(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  cove_poll *p;
  int32_t events;
  if (argc < 2 || napi_get_value_external(env, argv[0], (void **)&p) != napi_ok) return cove_throw(env, "bad handle");
  if (cove_arg_int32(env, argv[1], &events)) return NULL;
  if (p->closing) return cove_undefined(env);
  int ev = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  int r = uv_poll_start(&p->poll, ev, on_poll);
  if (r != 0) return cove_throw_errno(env, -r, "uv_poll_start");
  return cove_undefined(env);
}
COVE_EXPORT(pollUpdate, poll_update)

/* pollStop(handle): stops and releases the poll (the fd itself stays open; close it after). */
static napi_value poll_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  cove_poll *p;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&p) != napi_ok) return cove_throw(env, "bad handle");
  if (!p->closing) {
    p->closing = 1;
    uv_poll_stop(&p->poll);
    napi_delete_reference(env, p->cb);
    napi_async_destroy(env, p->ctx);
    uv_close((uv_handle_t *)&p->poll, on_close);
  }
  return cove_undefined(env);
}
COVE_EXPORT(pollStop, poll_stop)
