// The send threads of one JS environment (see sendpool.c).
#ifndef FANOUT_SENDPOOL_H
#define FANOUT_SENDPOOL_H
#include <node_api.h>

// Embedded first in whatever the pool runs; `err` is set by the pool when no thread could start.
typedef struct PoolItem {
  struct PoolItem* next;
  int pool_err;
} PoolItem;

typedef void (*pool_fn)(PoolItem* item);

typedef struct Pool Pool;

// Creates the pool of `env` (threads start lazily, at the first item): `run` runs on a send
// thread, `done` on the JS thread afterwards. One target thread until pool_set_threads.
Pool* pool_create(napi_env env, pool_fn run, pool_fn done);
// Queues an item (JS thread).
void pool_queue(Pool* pool, PoolItem* item);
void pool_set_threads(Pool* pool, int n);
void pool_stats(Pool* pool, int* target, int* running, int* busy, int* queued);
// Items not yet done keep the event loop alive: +1 when one starts, -1 when its callback ran.
void pool_hold(Pool* pool, int delta);

#endif
