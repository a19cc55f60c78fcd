// Whole small files written many to one thread-pool job (src/lib/wholefiles loads this).
//
// Writing a small file from JS costs four hand-offs to libuv's pool (open, writev, close,
// rename), each one a pool thread woken that preempts the JS thread on a small machine. Here a
// batch of files is one job: for each file, open (a temporary name or the final one), writev of
// its chunks, an optional fdatasync, close, and rename onto the final name; a file that fails is
// reported with its errno and the step that failed, its temporary name removed, and the batch
// goes on with the next file.
//
//   writeFiles(paths: string[], temps: (string | null)[], chunks: Buffer[][], mode: number,
//              flags: number, callback: (results: Int32Array) => void): void
//   results[2i] = errno of file i (0: written), results[2i + 1] = the step (OP_* below).
//   flags: 1 = exclusive (O_EXCL: an existing file is EEXIST), 2 = fdatasync before close.
// The caller keeps the buffers unchanged until the callback (they are also referenced here).
//
//   syncFs(path: string, callback: (errno: number) => void): void
//   syncfs(2) of the file system holding `path`, on a pool thread (Node has no binding; without
//   it the release code runs coreutils' `sync -f`, a fork of the whole process).
//
//   flockExclusive(fd: number): number
//   flock(2) LOCK_EX | LOCK_NB on an open file, on the JS thread (it never waits): 0 when taken,
//   else the errno (EWOULDBLOCK: another open file holds it). Node has no flock; src/lib/dirlock
//   uses it because such a lock goes with its holder's death whatever PID namespace it ran in.
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/uio.h>
#include <unistd.h>

#include "napiutil.h"
#include "writepiece.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

enum { OP_NONE = 0, OP_OPEN = 1, OP_WRITE = 2, OP_SYNC = 3, OP_CLOSE = 4, OP_RENAME = 5 };
enum { FLAG_EXCLUSIVE = 1, FLAG_DATASYNC = 2 };

typedef struct {
  char *path;
  char *tmp; // NULL: written under its final name
  struct iovec *iov;
  int iovcnt;
  int err;
  int op;
} file_job;

typedef struct {
  napi_async_work work;
  napi_ref keep; // the chunks array: its buffers stay alive until the callback
  napi_ref callback;
  file_job *files;
  uint32_t count;
  int flags;
  unsigned mode;
} batch_job;

#define CHECK(env, call)                                        \
  do {                                                          \
    if ((call) != napi_ok) {                                    \
      napi_throw_error((env), "EINVAL", "writeFiles: " #call); \
      goto fail;                                                \
    }                                                           \
  } while (0)

static void free_batch(batch_job *batch) {
  if (!batch) return;
  if (batch->files) {
    for (uint32_t i = 0; i < batch->count; i++) {
      free(batch->files[i].path);
      free(batch->files[i].tmp);
      free(batch->files[i].iov);
    }
    free(batch->files);
  }
  free(batch);
}

/**
 * One writev of the iovecs' leading bytes, at most FANOUT_WRITE_PIECE of them: the whole iovecs
 * that fit, or the first one's leading piece when it alone is larger.
 */
static ssize_t writev_piece(int fd, const struct iovec *iov, int count) {
  int n = 0;
  size_t total = 0;
  while (n < count && n < IOV_MAX && total + iov[n].iov_len <= FANOUT_WRITE_PIECE) total += iov[n++].iov_len;
  if (n > 0) return writev(fd, iov, n);
  struct iovec first = {iov[0].iov_base, FANOUT_WRITE_PIECE};
  return writev(fd, &first, 1);
}

/** Every byte of the iovecs, continuing after short writes (the iovecs are consumed). */
static int write_all(int fd, struct iovec *iov, int count) {
  while (count > 0) {
    ssize_t written = writev_piece(fd, iov, count);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (written == 0) return EIO; // no zero-length iovecs are passed: no progress is an error
    while (written > 0 && count > 0) {
      if ((size_t)written >= iov->iov_len) {
        written -= (ssize_t)iov->iov_len;
        iov++;
        count--;
      } else {
        iov->iov_base = (char *)iov->iov_base + written;
        iov->iov_len -= (size_t)written;
        written = 0;
      }
    }
  }
  return 0;
}

static void write_one(file_job *file, int flags, unsigned mode) {
  const char *name = file->tmp ? file->tmp : file->path;
  int open_flags = O_WRONLY | O_CREAT | O_CLOEXEC | ((flags & FLAG_EXCLUSIVE) ? O_EXCL : O_TRUNC);
  int fd;
  do fd = open(name, open_flags, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    file->err = errno;
    file->op = OP_OPEN;
    return;
  }
  int err = write_all(fd, file->iov, file->iovcnt);
  int op = err ? OP_WRITE : OP_NONE;
  if (!err && (flags & FLAG_DATASYNC) && fdatasync(fd) != 0) {
    err = errno;
    op = OP_SYNC;
  }
  // close(2) can report a write-back error (NFS, quota): it counts as the file failing.
  if (close(fd) != 0 && !err && errno != EINTR) {
    err = errno;
    op = OP_CLOSE;
  }
  if (!err && file->tmp && rename(file->tmp, file->path) != 0) {
    err = errno;
    op = OP_RENAME;
  }
  // A temporary name never outlives a failure; a file written in place is the caller's to judge.
  if (err && file->tmp) unlink(file->tmp);
  file->err = err;
  file->op = op;
}

static void execute(napi_env env, void *data) {
  batch_job *batch = data;
  for (uint32_t i = 0; i < batch->count; i++) write_one(&batch->files[i], batch->flags, batch->mode);
}

static void complete(napi_env env, napi_status status, void *data) {
  batch_job *batch = data;
  napi_value callback, global, buffer, results;
  int32_t *out = NULL;
  if (napi_get_reference_value(env, batch->callback, &callback) == napi_ok && napi_get_global(env, &global) == napi_ok &&
      napi_create_arraybuffer(env, sizeof(int32_t) * 2 * batch->count, (void **)&out, &buffer) == napi_ok &&
      napi_create_typedarray(env, napi_int32_array, 2 * batch->count, buffer, 0, &results) == napi_ok) {
    for (uint32_t i = 0; i < batch->count; i++) {
      // A cancelled job (never the case for queued work today) reports every file as not written.
      out[2 * i] = status == napi_ok ? batch->files[i].err : ECANCELED;
      out[2 * i + 1] = status == napi_ok ? batch->files[i].op : OP_NONE;
    }
    napi_call_function(env, global, callback, 1, &results, NULL);
  }
  napi_delete_reference(env, batch->keep);
  napi_delete_reference(env, batch->callback);
  napi_delete_async_work(env, batch->work);
  free_batch(batch);
}

static napi_value write_files(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  batch_job *batch = NULL;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return napiutil_throw_type(env, "EINVAL", "writeFiles(paths, temps, chunks, mode, flags, callback)");
  uint32_t count = 0, temps_count = 0, chunks_count = 0, mode = 0;
  int32_t flags = 0;
  CHECK(env, napi_get_array_length(env, argv[0], &count));
  CHECK(env, napi_get_array_length(env, argv[1], &temps_count));
  CHECK(env, napi_get_array_length(env, argv[2], &chunks_count));
  CHECK(env, napi_get_value_uint32(env, argv[3], &mode));
  CHECK(env, napi_get_value_int32(env, argv[4], &flags));
  if (temps_count != count || chunks_count != count) return napiutil_throw_type(env, "EINVAL", "writeFiles: paths, temps and chunks differ in length");
  batch = calloc(1, sizeof(*batch));
  if (!batch) goto oom;
  batch->files = calloc(count ? count : 1, sizeof(file_job));
  if (!batch->files) goto oom;
  batch->count = count;
  batch->flags = flags;
  batch->mode = mode;
  for (uint32_t i = 0; i < count; i++) {
    file_job *file = &batch->files[i];
    napi_value value, list;
    napi_valuetype type;
    CHECK(env, napi_get_element(env, argv[0], i, &value));
    if (!(file->path = napiutil_copy_string(env, value))) goto oom;
    CHECK(env, napi_get_element(env, argv[1], i, &value));
    CHECK(env, napi_typeof(env, value, &type));
    if (type == napi_string && !(file->tmp = napiutil_copy_string(env, value))) goto oom;
    CHECK(env, napi_get_element(env, argv[2], i, &list));
    uint32_t n = 0;
    CHECK(env, napi_get_array_length(env, list, &n));
    file->iov = calloc(n ? n : 1, sizeof(struct iovec));
    if (!file->iov) goto oom;
    for (uint32_t j = 0; j < n; j++) {
      void *base = NULL;
      size_t length = 0;
      CHECK(env, napi_get_element(env, list, j, &value));
      CHECK(env, napi_get_buffer_info(env, value, &base, &length));
      if (length == 0) continue;
      file->iov[file->iovcnt].iov_base = base;
      file->iov[file->iovcnt].iov_len = length;
      file->iovcnt++;
    }
  }
  napi_value name;
  CHECK(env, napi_create_reference(env, argv[2], 1, &batch->keep));
  CHECK(env, napi_create_reference(env, argv[5], 1, &batch->callback));
  CHECK(env, napi_create_string_utf8(env, "fanout.writeFiles", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_async_work(env, NULL, name, execute, complete, batch, &batch->work));
  CHECK(env, napi_queue_async_work(env, batch->work));
  return NULL;
oom:
  napi_throw_error(env, "ENOMEM", "writeFiles: out of memory");
fail:
  if (batch) {
    if (batch->keep) napi_delete_reference(env, batch->keep);
    if (batch->callback) napi_delete_reference(env, batch->callback);
    if (batch->work) napi_delete_async_work(env, batch->work);
  }
  free_batch(batch);
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_ref callback;
  char *path;
  int err;
} sync_job;

static void sync_execute(napi_env env, void *data) {
  sync_job *job = data;
  int fd;
  do fd = open(job->path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    job->err = errno;
    return;
  }
  job->err = syncfs(fd) == 0 ? 0 : errno;
  close(fd);
}

static void sync_complete(napi_env env, napi_status status, void *data) {
  sync_job *job = data;
  napi_value callback, global, result;
  if (napi_get_reference_value(env, job->callback, &callback) == napi_ok && napi_get_global(env, &global) == napi_ok &&
      napi_create_int32(env, status == napi_ok ? job->err : ECANCELED, &result) == napi_ok) {
    napi_call_function(env, global, callback, 1, &result, NULL);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job->path);
  free(job);
}

static napi_value sync_fs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name;
  sync_job *job = NULL;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return napiutil_throw_type(env, "EINVAL", "syncFs(path, callback)");
  job = calloc(1, sizeof(*job));
  if (!job || !(job->path = napiutil_copy_string(env, argv[0]))) {
    napi_throw_error(env, "ENOMEM", "syncFs: out of memory");
    goto fail;
  }
  CHECK(env, napi_create_reference(env, argv[1], 1, &job->callback));
  CHECK(env, napi_create_string_utf8(env, "fanout.syncFs", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_async_work(env, NULL, name, sync_execute, sync_complete, job, &job->work));
  CHECK(env, napi_queue_async_work(env, job->work));
  return NULL;
fail:
  if (job) {
    if (job->callback) napi_delete_reference(env, job->callback);
    if (job->work) napi_delete_async_work(env, job->work);
    free(job->path);
    free(job);
  }
  return NULL;
}

static napi_value flock_exclusive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int32_t fd = -1;
  int rc;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return napiutil_throw_type(env, "EINVAL", "flockExclusive(fd)");
  do rc = flock(fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (napi_create_int32(env, rc == 0 ? 0 : errno, &out) != napi_ok) return NULL;
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "writeFiles", NAPI_AUTO_LENGTH, write_files, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "writeFiles", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "syncFs", NAPI_AUTO_LENGTH, sync_fs, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "syncFs", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "flockExclusive", NAPI_AUTO_LENGTH, flock_exclusive, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "flockExclusive", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
