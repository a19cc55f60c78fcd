/*
 * Small page files in one thread-pool job each. A cold 64 KiB page cost the worker about a dozen
 * libuv hand-offs (open O_PATH, readlink, open, close, fstat, read, fstat, close at the source;
 * open, write, fstat, close, rename in the store), each a pool wake-up, a completion on the event
 * loop and a promise: more CPU than the bytes. Each function here does one such sequence on a
 * libuv pool thread (napi async work, like Node's own fs calls) and resolves one promise:
 *
 *   readInside(path, root, offset, length, into, expSize, expMtimeMs, out) → code
 *     opens `path` with O_PATH, checks that the real path of that fd (/proc/self/fd) is `root` or
 *     below it, opens the file through the fd (O_NONBLOCK: a FIFO never blocks), checks on the
 *     open fd that it is a regular file at exactly the version (size and whole-ms mtime, compared
 *     as Node computes mtimeMs) before reading, reads [offset, offset+length) into `into`, and
 *     stats the fd again after the last byte (a file rewritten in place keeps its fd).
 *     code: 0, an errno, or OUTSIDE/IS_DIR/NOT_FILE/CHANGED/PAST_END (negative);
 *     out = [size, mtimeSec, mtimeNsec, sizeAfter, mtimeSecAfter, mtimeNsecAfter, bytesRead].
 *     With `out` of 12 doubles, the SHA-256 of the bytes read is computed on the same pool thread,
 *     right after the read (the bytes still in cache): out[7] = 1, out[8..11] hold its 32 bytes;
 *     out[7] = 0 when it was not (a failed or short read, or no SHA256 in the process: Node
 *     exports OpenSSL's, looked up at load). For a worker's content-addressed small pages, whose
 *     hash its JS thread computed before: 12 % of that thread in a cold small-file sync.
 *   writeNew(tmp, file, data, out) → errno or 0: creates `tmp`, writes `data`, fstats it (the
 *     mtime the store trusts for sends), closes it and renames it to `file`; any failure removes
 *     `tmp`. out = [mtimeSec, mtimeNsec, failedStep (1 open, 2 write, 3 fstat, 4 close, 5 rename)].
 *   readFile(path, into, length, out) → errno or 0: reads up to `length` bytes from offset 0;
 *     out = [bytesRead].
 *
 * Each call returns its promise at once but only queues its job; flush(works) hands every job
 * queued since the last flush to the pool, spread over at most `works` async works that each run
 * theirs one after the other. The JS side flushes once per turn of the event loop: the cold items
 * of a batch answer then cost a wake-up per core, not two per page (on a 2-core host each
 * wake-up preempted the JS thread).
 *
 * A hung file system keeps one pool thread, as Node's fs calls would, and with it the jobs queued
 * behind the hung one in the same work; the JS side gives up on them after their deadline and
 * never reuses the memory the thread may still write (see smallio.ts).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "napiutil.h"
#include "writepiece.h"

#define CODE_OUTSIDE (-1)
#define CODE_IS_DIR (-2)
#define CODE_NOT_FILE (-3)
#define CODE_CHANGED (-4)
#define CODE_PAST_END (-5)

enum Op { READ_INSIDE, WRITE_NEW, READ_FILE };

typedef struct Job {
  enum Op op;
  struct Job* next;  // the next job queued (pending list) or run in the same work
  napi_deferred deferred;
  napi_ref into_ref;  // the data buffer: kept alive until the completion
  napi_ref out_ref;
  char* path;
  char* other;  // root (READ_INSIDE) or the final name (WRITE_NEW)
  unsigned char* data;
  int64_t offset;
  int64_t length;
  int64_t exp_size;
  double exp_mtime_ms;
  int code;
  int want_sha256;
  double result[12];
} Job;

/* OpenSSL's one-shot SHA256 as the process has it (Node exports its OpenSSL), or NULL. */
typedef unsigned char* (*Sha256Fn)(const unsigned char* data, size_t length, unsigned char* md);
static Sha256Fn sha256_fn;

static double mtime_ms(const struct stat* st) {
  /* As Node computes Stats.mtimeMs (sec * 1e3 + nsec / 1e6, in doubles): versions must compare equal. */
  return (double)st->st_mtim.tv_sec * 1e3 + (double)st->st_mtim.tv_nsec / 1e6;
}

static void put_stat(double* at, const struct stat* st) {
  at[0] = (double)st->st_size;
  at[1] = (double)st->st_mtim.tv_sec;
  at[2] = (double)st->st_mtim.tv_nsec;
}

static int inside(const char* root, const char* real) {
  size_t n = strlen(root);
  if (strncmp(root, real, n) != 0) return 0;
  if (real[n] == '\0') return 1;
  return root[n - 1] == '/' || real[n] == '/';
}

static int read_at(int fd, unsigned char* into, int64_t offset, int64_t length, int64_t* got) {
  *got = 0;
  while (*got < length) {
    ssize_t n = pread(fd, into + *got, (size_t)(length - *got), (off_t)(offset + *got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) break;
    *got += n;
  }
  return 0;
}

static void read_inside(Job* job) {
  int located = open(job->path, O_PATH | O_CLOEXEC);
  if (located < 0) {
    job->code = errno;
    return;
  }
  char link[64];
  char real[4097];
  snprintf(link, sizeof link, "/proc/self/fd/%d", located);
  ssize_t n = readlink(link, real, sizeof real - 1);
  if (n < 0) {
    job->code = errno;
    close(located);
    return;
  }
  real[n] = '\0';
  if (!inside(job->other, real)) {
    job->code = CODE_OUTSIDE;
    close(located);
    return;
  }
  int fd = open(link, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  int open_errno = errno;
  close(located);
  if (fd < 0) {
    job->code = open_errno;
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    job->code = errno;
    close(fd);
    return;
  }
  put_stat(job->result, &st);
  if (S_ISDIR(st.st_mode)) job->code = CODE_IS_DIR;
  else if (!S_ISREG(st.st_mode)) job->code = CODE_NOT_FILE;
  else if ((int64_t)st.st_size != job->exp_size || floor(mtime_ms(&st)) != job->exp_mtime_ms) job->code = CODE_CHANGED;
  else if (job->length > 0 && job->offset >= (int64_t)st.st_size) job->code = CODE_PAST_END;
  if (job->code != 0) {
    close(fd);
    return;
  }
  int64_t got = 0;
  job->code = read_at(fd, job->data, job->offset, job->length, &got);
  job->result[6] = (double)got;
  if (job->code == 0) {
    if (fstat(fd, &st) != 0) job->code = errno;
    else put_stat(job->result + 3, &st);
  }
  close(fd);
  if (job->code == 0 && job->want_sha256 && sha256_fn && got == job->length) {
    unsigned char md[32];
    sha256_fn(job->data, (size_t)got, md);
    memcpy(job->result + 8, md, sizeof md);
    job->result[7] = 1;
  }
}

static void write_new(Job* job) {
  int fd = open(job->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    job->code = errno;
    job->result[2] = 1;
    return;
  }
  int64_t done = 0;
  while (done < job->length) {
    size_t piece = (size_t)(job->length - done);
    if (piece > FANOUT_WRITE_PIECE) piece = FANOUT_WRITE_PIECE;
    ssize_t n = pwrite(fd, job->data + done, piece, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      job->code = n < 0 ? errno : EIO;
      job->result[2] = 2;
      break;
    }
    done += n;
  }
  struct stat st;
  if (job->code == 0) {
    if (fstat(fd, &st) != 0) {
      job->code = errno;
      job->result[2] = 3;
    } else {
      job->result[0] = (double)st.st_mtim.tv_sec;
      job->result[1] = (double)st.st_mtim.tv_nsec;
    }
  }
  /* close can report a failed write-back (NFS, quotas): such a page is not stored. */
  if (close(fd) != 0 && job->code == 0) {
    job->code = errno;
    job->result[2] = 4;
  }
  if (job->code == 0 && rename(job->path, job->other) != 0) {
    job->code = errno;
    job->result[2] = 5;
  }
  if (job->code != 0) unlink(job->path);
}

/* A page file: never through a symlink, and a FIFO put in its place reads as empty rather than
 * blocking this pool thread until a writer comes (the store then drops the page as corrupt). */
static void read_file(Job* job) {
  int fd = open(job->path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    job->code = errno;
    return;
  }
  int64_t got = 0;
  job->code = read_at(fd, job->data, 0, job->length, &got);
  job->result[0] = (double)got;
  close(fd);
}

static void run_job(Job* job) {
  switch (job->op) {
    case READ_INSIDE: read_inside(job); break;
    case WRITE_NEW: write_new(job); break;
    case READ_FILE: read_file(job); break;
  }
}

/* Jobs queued and not flushed yet, per addon instance (a worker thread has its own). */
typedef struct Pending {
  Job* head;
  Job* tail;
} Pending;

/* One async work: jobs run one after the other on one pool thread. */
typedef struct Work {
  napi_async_work work;
  Job* jobs;
} Work;

static void execute(napi_env env, void* data) {
  for (Job* job = ((Work*)data)->jobs; job; job = job->next) run_job(job);
}

static void settle(napi_env env, Job* job, int code) {
  napi_value out, value;
  void* out_data = NULL;
  size_t out_length = 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_get_reference_value(env, job->out_ref, &out) == napi_ok &&
      napi_get_typedarray_info(env, out, &type, &out_length, &out_data, &ab, &offset) == napi_ok && type == napi_float64_array) {
    size_t n = out_length < 12 ? out_length : 12;
    memcpy(out_data, job->result, n * sizeof(double));
  }
  napi_create_int32(env, code, &value);
  napi_resolve_deferred(env, job->deferred, value);
  napi_delete_reference(env, job->out_ref);
  if (job->into_ref) napi_delete_reference(env, job->into_ref);
  free(job->path);
  free(job->other);
  free(job);
}

static void complete(napi_env env, napi_status status, void* data) {
  Work* work = (Work*)data;
  Job* job = work->jobs;
  while (job) {
    Job* next = job->next;
    settle(env, job, status == napi_ok ? job->code : ECANCELED);
    job = next;
  }
  napi_delete_async_work(env, work->work);
  free(work);
}

static int get_bytes(napi_env env, napi_value value, unsigned char** data, size_t* length) {
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  void* ptr;
  if (napi_get_typedarray_info(env, value, &type, length, &ptr, &ab, &offset) != napi_ok || type != napi_uint8_array) return 0;
  *data = (unsigned char*)ptr;
  return 1;
}

/* Adds `job` with its buffers to the pending list and returns its promise (flush() runs it). */
static napi_value queue(napi_env env, Job* job, napi_value into, napi_value out) {
  Pending* pending = NULL;
  napi_value promise;
  if (napi_get_instance_data(env, (void**)&pending) != napi_ok || !pending) {
    free(job->path);
    free(job->other);
    free(job);
    return napiutil_throw_type(env, NULL, "smallio: not initialized");
  }
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_reference(env, out, 1, &job->out_ref);
  if (into) napi_create_reference(env, into, 1, &job->into_ref);
  if (pending->tail) pending->tail->next = job;
  else pending->head = job;
  pending->tail = job;
  return promise;
}

/*
 * flush(works): every pending job to the pool, spread evenly over at most `works` async works
 * (each runs its jobs one after the other); returns the works queued.
 */
static napi_value Flush(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t max_works = 1;
  if (argc >= 1) napi_get_value_int32(env, argv[0], &max_works);
  if (max_works < 1) max_works = 1;
  Pending* pending = NULL;
  napi_get_instance_data(env, (void**)&pending);
  int32_t count = 0;
  for (Job* job = pending ? pending->head : NULL; job; job = job->next) count++;
  int32_t per_work = (count + max_works - 1) / max_works;
  if (per_work < 1) per_work = 1;
  int32_t works = 0;
  while (pending && pending->head) {
    Work* work = calloc(1, sizeof(Work));
    napi_value resource;
    napi_create_string_utf8(env, "fanout.smallio", NAPI_AUTO_LENGTH, &resource);
    if (!work || napi_create_async_work(env, NULL, resource, execute, complete, work, &work->work) != napi_ok) {
      /* No memory for the work: what is pending fails (ENOMEM) rather than waiting forever. */
      free(work);
      Job* job = pending->head;
      pending->head = pending->tail = NULL;
      while (job) {
        Job* next = job->next;
        settle(env, job, ENOMEM);
        job = next;
      }
      break;
    }
    /* The next per_work pending jobs, in the order they were queued. */
    work->jobs = pending->head;
    Job* last = pending->head;
    for (int32_t n = 1; n < per_work && last->next; n++) last = last->next;
    pending->head = last->next;
    if (!pending->head) pending->tail = NULL;
    last->next = NULL;
    napi_queue_async_work(env, work->work);
    works++;
  }
  napi_create_int32(env, works, &result);
  return result;
}

static napi_value ReadInside(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 8) return napiutil_throw_type(env, NULL, "readInside(path, root, offset, length, into, expSize, expMtimeMs, out)");
  Job* job = calloc(1, sizeof(Job));
  if (!job) return napiutil_throw_type(env, NULL, "out of memory");
  job->op = READ_INSIDE;
  job->path = napiutil_copy_string(env, argv[0]);
  job->other = napiutil_copy_string(env, argv[1]);
  double offset, length, exp_size;
  unsigned char* data;
  size_t capacity;
  napi_get_value_double(env, argv[2], &offset);
  napi_get_value_double(env, argv[3], &length);
  napi_get_value_double(env, argv[5], &exp_size);
  napi_get_value_double(env, argv[6], &job->exp_mtime_ms);
  if (!job->path || !job->other || job->other[0] == '\0' || !get_bytes(env, argv[4], &data, &capacity) || length < 0 || offset < 0 || (size_t)length > capacity) {
    free(job->path);
    free(job->other);
    free(job);
    return napiutil_throw_type(env, NULL, "readInside: bad arguments");
  }
  job->data = data;
  job->offset = (int64_t)offset;
  job->length = (int64_t)length;
  job->exp_size = (int64_t)exp_size;
  napi_typedarray_type out_type;
  size_t out_length = 0;
  void* out_data;
  napi_value out_ab;
  size_t out_offset;
  if (napi_get_typedarray_info(env, argv[7], &out_type, &out_length, &out_data, &out_ab, &out_offset) == napi_ok && out_type == napi_float64_array)
    job->want_sha256 = out_length >= 12;
  return queue(env, job, argv[4], argv[7]);
}

static napi_value WriteNew(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return napiutil_throw_type(env, NULL, "writeNew(tmp, file, data, out)");
  Job* job = calloc(1, sizeof(Job));
  if (!job) return napiutil_throw_type(env, NULL, "out of memory");
  job->op = WRITE_NEW;
  job->path = napiutil_copy_string(env, argv[0]);
  job->other = napiutil_copy_string(env, argv[1]);
  unsigned char* data;
  size_t length;
  if (!job->path || !job->other || !get_bytes(env, argv[2], &data, &length)) {
    free(job->path);
    free(job->other);
    free(job);
    return napiutil_throw_type(env, NULL, "writeNew: bad arguments");
  }
  job->data = data;
  job->length = (int64_t)length;
  return queue(env, job, argv[2], argv[3]);
}

static napi_value ReadFile(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return napiutil_throw_type(env, NULL, "readFile(path, into, length, out)");
  Job* job = calloc(1, sizeof(Job));
  if (!job) return napiutil_throw_type(env, NULL, "out of memory");
  job->op = READ_FILE;
  job->path = napiutil_copy_string(env, argv[0]);
  unsigned char* data;
  size_t capacity;
  double length;
  napi_get_value_double(env, argv[2], &length);
  if (!job->path || !get_bytes(env, argv[1], &data, &capacity) || length < 0 || (size_t)length > capacity) {
    free(job->path);
    free(job);
    return napiutil_throw_type(env, NULL, "readFile: bad arguments");
  }
  job->data = data;
  job->length = (int64_t)length;
  return queue(env, job, argv[1], argv[3]);
}

static void free_pending(napi_env env, void* data, void* hint) {
  free(data); /* jobs still pending at exit are left to the process's end, as their promises are */
}

/* hasSha256(): whether readInside can hash what it reads (SHA256 found in the process). */
static napi_value HasSha256(napi_env env, napi_callback_info info) {
  napi_value result;
  napi_get_boolean(env, sha256_fn != NULL, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  /* On the JS thread, before any job: the pool threads only read it. */
  if (!sha256_fn) sha256_fn = (Sha256Fn)dlsym(RTLD_DEFAULT, "SHA256");
  Pending* pending = calloc(1, sizeof(Pending));
  if (!pending || napi_set_instance_data(env, pending, free_pending, NULL) != napi_ok) {
    free(pending);
    return napiutil_throw_type(env, NULL, "smallio: out of memory");
  }
  napi_property_descriptor props[] = {
      {"flush", NULL, Flush, NULL, NULL, NULL, napi_default, NULL},
      {"readInside", NULL, ReadInside, NULL, NULL, NULL, napi_default, NULL},
      {"writeNew", NULL, WriteNew, NULL, NULL, NULL, napi_default, NULL},
      {"readFile", NULL, ReadFile, NULL, NULL, NULL, napi_default, NULL},
      {"hasSha256", NULL, HasSha256, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
