// sendFile(socketFd, fileFd, offset, length, idleMs, callback(errno, sent)[, head]): sends
// `head` (a Buffer: the response head or a chunk's size line, copied here) and then
// file[offset, offset+length) to a socket with sendfile(2) on this addon's own send threads
// (sendpool.c; setThreads(n), 1 until set), so the JS thread never blocks and several sends use
// several cores; a small send of cached bytes is made at once instead (INLINE_MAX below), and
// then sendFile returns -1 and never calls back. When the socket is full the send waits for
// room (briefly on the thread, then on the event loop) up to idleMs each time: a client that
// takes no byte for that long fails with ETIMEDOUT. errno 0 = all sent; `sent` counts the file's bytes only;
// ENODATA = the file ended before `length`. The head goes with MSG_MORE, so head and body leave
// in the same segments: one write and one wake-up of the reader fewer per response than a head
// written by Node before the body (on loopback each write runs the receiver's TCP path and
// wakes it).
//
// sendFiles(socketFd, spans, idleMs, callback(errno, sent)[, head]): the same for several file
// spans in a row ([fd, offset, length, fd, offset, length, …]), as one job: each span follows the
// one before on the send thread, so a response made of many local pages (/v1/data, S3 GetObject)
// costs no wake-up of the JS thread and of a send thread between pages. `sent` counts the bytes
// of every span sent; ENODATA = a file ended early (the span is the one `sent` falls in).
//
// The socket fd is dup()ed on the JS thread before the work is queued: if Node closes the socket
// (client reset, worker stop) while the send runs, the number cannot be reused by another file
// under our feet. sendFile returns the duplicate's number otherwise: shutdown(dupFd) (JS thread,
// before the callback ran) ends the send at once with EPIPE, so a closed connection or a stopping
// worker does not wait for the idle deadline. The duplicate is closed only in the completion, on the
// JS thread, so shutdown can never reach a reused number.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include "sendpool.h"

typedef struct Span {
  int file;
  int64_t offset;
  int64_t length;
} Span;

typedef struct Job {
  PoolItem item;  // first: the pool's queues link jobs through it
  napi_env env;
  napi_async_context context;
  napi_ref callback;
  uv_poll_t poll;
  uv_timer_t timer;
  int handles;  // poll and timer initialised (closed before the job is freed)
  int closing;
  int sock;
  int file;
  int64_t offset;
  int64_t length;
  int idle_ms;
  int64_t sent;  // of the current span
  Span* spans;   // the spans after the current one (NULL: none); freed with the job
  int span_count;
  int span_next;
  int64_t sent_before;  // bytes of the spans already sent
  char* head;  // sent before the file's bytes (NULL: none); freed with the job
  size_t head_length;
  size_t head_sent;
  int err;
  int would_block;
  int timed_out;
} Job;

// How long a send thread waits for room itself: a reader that keeps up frees room within
// microseconds, so the send stays on the thread; one that does not is waited for on the event
// loop (uv_poll on the duplicate), where it costs no thread: stalled clients never hold the threads.
#define THREAD_WAIT_MS 10

// The socket is full: wait for room on this thread up to THREAD_WAIT_MS. Returns 0 to try
// again, 1 to stop this round: the job waits on the event loop (would_block) or failed (err).
static int wait_for_room(Job* job) {
  struct pollfd p = {.fd = job->sock, .events = POLLOUT, .revents = 0};
  int r = poll(&p, 1, THREAD_WAIT_MS);
  if (r < 0 && errno != EINTR) job->err = errno;
  else if (r == 0) job->would_block = 1;  // wait on the event loop
  else if (r > 0 && (p.revents & POLLNVAL)) job->err = EBADF;
  else return 0;
  return 1;
}

// Sends what the socket takes now of head[*head_sent..] then file[offset + *sent, offset + length)
// (the socket is non-blocking: never waits), advancing *head_sent and *sent. Returns 0 once all
// is sent, else why it stopped: EAGAIN (the socket is full), ENODATA (the file ended early) or
// the send's errno.
static int send_some(int sock, const char* head, size_t head_length, int file, int64_t offset, int64_t length, size_t* head_sent,
                     int64_t* sent) {
  while (*head_sent < head_length) {
    ssize_t n = send(sock, head + *head_sent, head_length - *head_sent, MSG_NOSIGNAL | MSG_DONTWAIT | (length > *sent ? MSG_MORE : 0));
    if (n >= 0) *head_sent += (size_t)n;
    else if (errno != EINTR) return errno;
  }
  off_t at = (off_t)(offset + *sent);
  while (*sent < length) {
    int64_t left = length - *sent;
    ssize_t n = sendfile(sock, file, &at, left > (1 << 30) ? (size_t)(1 << 30) : (size_t)left);
    if (n > 0) *sent += n;
    else if (n == 0) return ENODATA;
    else if (errno != EINTR) return errno;
  }
  return 0;
}

static void execute(Job* job) {
  if (job->timed_out) {
    job->err = ETIMEDOUT;
    return;
  }
  for (;;) {
    int err = send_some(job->sock, job->head, job->head_length, job->file, job->offset, job->length, &job->head_sent, &job->sent);
    if (err == EWOULDBLOCK) err = EAGAIN;
    if (err == 0 && job->span_next < job->span_count) {
      // The next span goes out right behind this one, from this thread.
      Span* next = &job->spans[job->span_next++];
      job->sent_before += job->sent;
      job->file = next->file;
      job->offset = next->offset;
      job->length = next->length;
      job->sent = 0;
      continue;
    }
    if (err != EAGAIN) {
      job->err = err;  // 0: all sent
      return;
    }
    if (wait_for_room(job)) return;
  }
}

static void complete(Job* job);

static void run_item(PoolItem* item) {
  execute((Job*)item);
}

static void finish_item(PoolItem* item) {
  Job* job = (Job*)item;
  if (item->pool_err) job->err = item->pool_err;
  complete(job);
}

static Pool* pool_of(napi_env env) {
  Pool* pool = NULL;
  napi_get_instance_data(env, (void**)&pool);
  return pool;
}

static void queue_round(Job* job) {
  pool_queue(pool_of(job->env), &job->item);
}

static void on_writable(uv_poll_t* handle, int status, int events) {
  Job* job = handle->data;
  uv_poll_stop(&job->poll);
  uv_timer_stop(&job->timer);
  queue_round(job);  // an error shows in sendfile's errno
}

static void on_idle(uv_timer_t* handle) {
  Job* job = handle->data;
  uv_poll_stop(&job->poll);
  job->timed_out = 1;
  queue_round(job);  // finishes in complete(), where JS may be called
}

static void free_job(Job* job) {
  close(job->sock);
  free(job->head);
  free(job->spans);
  free(job);
}

static void on_closed(uv_handle_t* handle) {
  Job* job = handle->data;
  if (--job->closing > 0) return;
  free_job(job);
}

static void complete(Job* job) {
  napi_env env = job->env;
  if (job->err == 0 && job->would_block) {
    job->would_block = 0;
    if (!job->handles) {
      uv_loop_t* loop;
      napi_get_uv_event_loop(env, &loop);
      if (uv_poll_init(loop, &job->poll, job->sock) != 0) {
        job->err = EBADF;
        goto finish;
      }
      uv_timer_init(loop, &job->timer);
      job->poll.data = job;
      job->timer.data = job;
      job->handles = 1;
    }
    uv_poll_start(&job->poll, UV_WRITABLE | UV_DISCONNECT, on_writable);
    uv_timer_start(&job->timer, on_idle, (uint64_t)job->idle_ms, 0);
    return;
  }
finish:;
  // Called from a libuv callback, outside any JS call: a scope of its own, and make_callback so
  // the promise the callback settles runs its continuations now (microtasks, nextTick).
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, argv[2];
  napi_get_reference_value(env, job->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, job->err, &argv[0]);
  napi_create_int64(env, job->sent_before + job->sent, &argv[1]);
  napi_delete_reference(env, job->callback);
  napi_make_callback(env, job->context, global, cb, 2, argv, NULL);
  napi_async_destroy(env, job->context);
  napi_close_handle_scope(env, scope);
  pool_hold(pool_of(env), -1);
  // The duplicate stays open until the callback ran (JS may shut it down until then) and until
  // libuv no longer watches it.
  if (job->handles) {
    job->closing = 2;
    uv_close((uv_handle_t*)&job->poll, on_closed);
    uv_close((uv_handle_t*)&job->timer, on_closed);
  } else {
    free_job(job);
  }
}

static napi_value throw_type(napi_env env, const char* message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

// A head longer than this is not a response head or a chunk line.
#define MAX_HEAD (64 * 1024)

// A send this small whose file range is in the page cache is made at once, on the calling (JS)
// thread: handing it to a send thread and being called back costs that thread more than the send
// itself (two wake-ups; a 64 KiB hit spent most of its time there). What the socket does not take
// at once, a range not all cached (a disk read would block the event loop) or a larger send goes
// to a send thread as before. sendFile returns SENT_NOW, and never calls back, when all was sent.
#define INLINE_MAX (256 * 1024)
#define SENT_NOW (-1)

#ifndef __NR_cachestat
#define __NR_cachestat 451  // Linux 6.5 (the same number on every architecture)
#endif
struct cachestat_range {
  uint64_t off;
  uint64_t len;
};
struct cachestat_counts {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
static int no_cachestat;  // the kernel (or a seccomp filter) refused it once: never inline

// Whether every page of file[offset, offset+length) is in the page cache, so sendfile will not
// wait for the disk.
static int range_cached(int file, int64_t offset, int64_t length) {
  if (no_cachestat) return 0;
  if (length <= 0) return 1;
  long page = sysconf(_SC_PAGESIZE);
  uint64_t first = (uint64_t)offset / page, last = (uint64_t)(offset + length - 1) / page;
  struct cachestat_range range = {.off = first * page, .len = (last - first + 1) * page};
  struct cachestat_counts counts;
  if (syscall(__NR_cachestat, file, &range, &counts, 0) != 0) {
    if (errno == ENOSYS || errno == EPERM) no_cachestat = 1;
    return 0;
  }
  return counts.nr_cache >= last - first + 1;
}

static int head_arg(napi_env env, napi_value value, void** data, size_t* length);
static napi_value start_job(napi_env env, Job* job, int sock, int idle_ms, napi_value callback, void* head_data, size_t head_length);

static napi_value send_file(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6) return throw_type(env, "sendFile(socketFd, fileFd, offset, length, idleMs, callback[, head])");
  int32_t sock, file, idle_ms;
  int64_t offset, length;
  napi_valuetype cb_type;
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &file) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_get_value_int32(env, argv[4], &idle_ms) != napi_ok || napi_typeof(env, argv[5], &cb_type) != napi_ok ||
      cb_type != napi_function || sock < 0 || file < 0 || offset < 0 || length < 0 || idle_ms <= 0)
    return throw_type(env, "sendFile: bad arguments");
  void* head_data = NULL;
  size_t head_length = 0;
  if (!head_arg(env, argc >= 7 ? argv[6] : NULL, &head_data, &head_length)) return NULL;
  size_t head_sent = 0;
  int64_t sent = 0;
  if ((int64_t)head_length + length <= INLINE_MAX && range_cached(file, offset, length)) {
    // Stopped early (a full socket, an error): the send thread goes on from there (and meets
    // the error again, to report it).
    if (send_some(sock, head_data, head_length, file, offset, length, &head_sent, &sent) == 0) {
      napi_value done;
      napi_create_int32(env, SENT_NOW, &done);
      return done;
    }
  }
  Job* job = calloc(1, sizeof(Job));
  if (!job) {
    napi_throw_error(env, "ENOMEM", "sendFile: no memory for the job");
    return NULL;
  }
  job->file = file;
  job->offset = offset;
  job->length = length;
  job->head_sent = head_sent;
  job->sent = sent;
  return start_job(env, job, sock, idle_ms, argv[5], head_data, head_length);
}

// The optional head argument: a Buffer of at most MAX_HEAD bytes (its memory is JS's: copied by
// start_job). Returns 0, with a TypeError thrown, if it is something else.
static int head_arg(napi_env env, napi_value value, void** data, size_t* length) {
  napi_valuetype type = napi_undefined;
  if (!value || napi_typeof(env, value, &type) != napi_ok || type == napi_undefined) return 1;
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, value, data, length) != napi_ok ||
      *length > MAX_HEAD) {
    throw_type(env, "sendFile: head must be a Buffer of at most 64 KiB");
    return 0;
  }
  return 1;
}

// Queues `job` (its first span set, and any spans after it) on a duplicate of `sock`. Takes the
// job: on failure it is freed and a JS error thrown. Returns the duplicate's number.
static napi_value start_job(napi_env env, Job* job, int sock, int idle_ms, napi_value callback, void* head_data, size_t head_length) {
  if (head_length > 0) {
    job->head = malloc(head_length);
    if (!job->head) {
      free(job->spans);
      free(job);
      napi_throw_error(env, "ENOMEM", "sendFile: no memory for the head");
      return NULL;
    }
    memcpy(job->head, head_data, head_length);
    job->head_length = head_length;
  }
  int dup_sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (dup_sock < 0) {
    free(job->head);
    free(job->spans);
    free(job);
    napi_throw_error(env, "EBADF", "sendFile: the socket descriptor is not open");
    return NULL;
  }
  job->env = env;
  job->sock = dup_sock;
  job->idle_ms = idle_ms;
  napi_create_reference(env, callback, 1, &job->callback);
  napi_value name;
  napi_create_string_utf8(env, "fanout.sendFile", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &job->context);
  pool_hold(pool_of(env), +1);
  queue_round(job);
  napi_value result;
  napi_create_int32(env, dup_sock, &result);
  return result;
}

// At most this many spans per job: a response's run of local pages, not a whole store.
#define MAX_SPANS 1024

static napi_value send_files(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  const char* usage = "sendFiles(socketFd, [fd, offset, length, …], idleMs, callback[, head])";
  if (argc < 4) return throw_type(env, usage);
  int32_t sock, idle_ms;
  uint32_t count = 0;
  bool is_array = false;
  napi_valuetype cb_type;
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &count) != napi_ok || napi_get_value_int32(env, argv[2], &idle_ms) != napi_ok ||
      napi_typeof(env, argv[3], &cb_type) != napi_ok || cb_type != napi_function || sock < 0 || idle_ms <= 0 || count == 0 ||
      count % 3 != 0 || count / 3 > MAX_SPANS)
    return throw_type(env, usage);
  void* head_data = NULL;
  size_t head_length = 0;
  if (!head_arg(env, argc >= 5 ? argv[4] : NULL, &head_data, &head_length)) return NULL;
  int n = (int)(count / 3);
  Span* spans = calloc((size_t)n, sizeof(Span));
  Job* job = calloc(1, sizeof(Job));
  if (!spans || !job) {
    free(spans);
    free(job);
    napi_throw_error(env, "ENOMEM", "sendFiles: no memory for the job");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    napi_value v[3];
    int32_t file;
    int64_t offset, length;
    for (int k = 0; k < 3; k++) napi_get_element(env, argv[1], (uint32_t)(3 * i + k), &v[k]);
    if (napi_get_value_int32(env, v[0], &file) != napi_ok || napi_get_value_int64(env, v[1], &offset) != napi_ok ||
        napi_get_value_int64(env, v[2], &length) != napi_ok || file < 0 || offset < 0 || length < 0) {
      free(spans);
      free(job);
      return throw_type(env, usage);
    }
    spans[i] = (Span){.file = file, .offset = offset, .length = length};
  }
  job->file = spans[0].file;
  job->offset = spans[0].offset;
  job->length = spans[0].length;
  job->spans = spans;
  job->span_count = n;
  job->span_next = 1;
  return start_job(env, job, sock, idle_ms, argv[3], head_data, head_length);
}

static napi_value shutdown_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return throw_type(env, "shutdown(dupFd)");
  shutdown(fd, SHUT_RDWR);
  return NULL;
}

// setThreads(n): how many sends run at once (threads started lazily, extra ones leave when
// idle). Returns n.
static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1 || n > 1024) return throw_type(env, "setThreads(n), 1 <= n <= 1024");
  pool_set_threads(pool_of(env), n);
  return argv[0];
}

// threads(): { target, running, busy, queued } of the send threads.
static napi_value thread_stats(napi_env env, napi_callback_info info) {
  int target, running, busy, queued;
  pool_stats(pool_of(env), &target, &running, &busy, &queued);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int32(env, target, &v);
  napi_set_named_property(env, out, "target", v);
  napi_create_int32(env, running, &v);
  napi_set_named_property(env, out, "running", v);
  napi_create_int32(env, busy, &v);
  napi_set_named_property(env, out, "busy", v);
  napi_create_int32(env, queued, &v);
  napi_set_named_property(env, out, "queued", v);
  return out;
}

NAPI_MODULE_INIT() {
  napi_set_instance_data(env, pool_create(env, run_item, finish_item), NULL, NULL);
  napi_value fn;
  napi_create_function(env, "setThreads", NAPI_AUTO_LENGTH, set_threads, NULL, &fn);
  napi_set_named_property(env, exports, "setThreads", fn);
  napi_create_function(env, "threads", NAPI_AUTO_LENGTH, thread_stats, NULL, &fn);
  napi_set_named_property(env, exports, "threads", fn);
  napi_create_function(env, "sendFile", NAPI_AUTO_LENGTH, send_file, NULL, &fn);
  napi_set_named_property(env, exports, "sendFile", fn);
  napi_create_function(env, "sendFiles", NAPI_AUTO_LENGTH, send_files, NULL, &fn);
  napi_set_named_property(env, exports, "sendFiles", fn);
  napi_create_function(env, "shutdown", NAPI_AUTO_LENGTH, shutdown_fd, NULL, &fn);
  napi_set_named_property(env, exports, "shutdown", fn);
  return exports;
}
