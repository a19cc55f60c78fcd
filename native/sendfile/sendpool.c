// Send threads of the addon's own, one pool per JS environment: a queue of items to run, a queue
// of items done that the JS thread picks up (woken by `async`), and how many threads should run.
// Own threads rather than libuv's pool: their number is the worker's `threads` setting, set at
// start (libuv sizes its pool from UV_THREADPOOL_SIZE before any JS of ours runs), and sends and
// file system work never queue behind each other.
#include "sendpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <uv.h>

struct Pool {
  pthread_mutex_t lock;
  pthread_cond_t work;  // an item was queued, or the target changed
  pthread_cond_t exited;  // a thread left (teardown waits for all)
  PoolItem* queued;
  PoolItem* queued_tail;
  PoolItem* done;
  PoolItem* done_tail;
  uv_async_t async;
  pool_fn run;
  pool_fn finish;
  int target;   // threads wanted
  int running;  // threads alive
  int busy;     // threads running an item now
  int stopping;
  int outstanding;  // items not yet finished (JS thread only): while any, `async` holds the loop
};

// With the lock held.
static void push_done(Pool* pool, PoolItem* item) {
  if (pool->done_tail) pool->done_tail->next = item;
  else pool->done = item;
  pool->done_tail = item;
  uv_async_send(&pool->async);
}

static void* send_thread(void* arg) {
  Pool* pool = arg;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (!pool->queued && !pool->stopping && pool->running <= pool->target) pthread_cond_wait(&pool->work, &pool->lock);
    if (pool->stopping || pool->running > pool->target) break;
    PoolItem* item = pool->queued;
    pool->queued = item->next;
    if (!pool->queued) pool->queued_tail = NULL;
    item->next = NULL;
    pool->busy++;
    pthread_mutex_unlock(&pool->lock);
    pool->run(item);
    pthread_mutex_lock(&pool->lock);
    pool->busy--;
    push_done(pool, item);
  }
  pool->running--;
  pthread_cond_broadcast(&pool->exited);
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

// With the lock held: starts threads up to the target (lazily, at the first item).
static int grow(Pool* pool) {
  while (pool->running < pool->target) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&thread, &attr, send_thread, pool);
    pthread_attr_destroy(&attr);
    if (err != 0) return pool->running > 0 ? 0 : err;  // fewer threads still send
    pool->running++;
  }
  return 0;
}

static void on_done(uv_async_t* handle) {
  Pool* pool = handle->data;
  pthread_mutex_lock(&pool->lock);
  PoolItem* list = pool->done;
  pool->done = pool->done_tail = NULL;
  pthread_mutex_unlock(&pool->lock);
  while (list) {
    PoolItem* next = list->next;
    list->next = NULL;
    pool->finish(list);
    list = next;
  }
}

void pool_queue(Pool* pool, PoolItem* item) {
  pthread_mutex_lock(&pool->lock);
  int err = grow(pool);
  if (err == 0) {
    if (pool->queued_tail) pool->queued_tail->next = item;
    else pool->queued = item;
    pool->queued_tail = item;
    pthread_cond_signal(&pool->work);
  } else {
    item->pool_err = err;  // no thread at all: fail this item, on the JS thread
    push_done(pool, item);
  }
  pthread_mutex_unlock(&pool->lock);
}

void pool_set_threads(Pool* pool, int n) {
  pthread_mutex_lock(&pool->lock);
  pool->target = n;
  pthread_cond_broadcast(&pool->work);  // extra threads leave when idle
  pthread_mutex_unlock(&pool->lock);
}

void pool_stats(Pool* pool, int* target, int* running, int* busy, int* queued) {
  pthread_mutex_lock(&pool->lock);
  *target = pool->target;
  *running = pool->running;
  *busy = pool->busy;
  *queued = 0;
  for (PoolItem* i = pool->queued; i; i = i->next) (*queued)++;
  pthread_mutex_unlock(&pool->lock);
}

void pool_hold(Pool* pool, int delta) {
  int before = pool->outstanding;
  pool->outstanding += delta;
  if (before == 0 && pool->outstanding > 0) uv_ref((uv_handle_t*)&pool->async);
  if (before > 0 && pool->outstanding == 0) uv_unref((uv_handle_t*)&pool->async);
}

static void on_async_closed(uv_handle_t* handle) {
  free(handle->data);
}

// The environment ends (process exit, a worker_thread stops): threads leave after their item,
// the pool is freed once none is left.
static void teardown(void* data) {
  Pool* pool = data;
  pthread_mutex_lock(&pool->lock);
  pool->stopping = 1;
  pthread_cond_broadcast(&pool->work);
  while (pool->running > 0) pthread_cond_wait(&pool->exited, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
  uv_close((uv_handle_t*)&pool->async, on_async_closed);
}

Pool* pool_create(napi_env env, pool_fn run, pool_fn finish) {
  Pool* pool = calloc(1, sizeof(Pool));
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->work, NULL);
  pthread_cond_init(&pool->exited, NULL);
  pool->run = run;
  pool->finish = finish;
  pool->target = 1;
  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  uv_async_init(loop, &pool->async, on_done);
  pool->async.data = pool;
  uv_unref((uv_handle_t*)&pool->async);  // referenced only while items are outstanding (pool_hold)
  napi_add_env_cleanup_hook(env, teardown, pool);
  return pool;
}
