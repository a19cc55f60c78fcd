// armExitWatchdog(ms, code): starts a thread that ends the process with `code` by _exit(2) once
// `ms` milliseconds have passed. bin/fanout.js arms it right before process.exit(code).
//
// Why: Node's exit joins V8's worker threads (NodePlatform::Shutdown). A concurrent compile job
// that needs a garbage collection waits for the main thread to run it, and the main thread, now
// inside exit, never does: the process hangs for ever (nodejs/node#54918, seen here once in about
// 80 `fanout cat`s of 2 GiB: main thread in WorkerThreadsTaskRunner::Shutdown, a TurboFan job in
// CollectionBarrier::AwaitCollectionBackground). By the time the watchdog can fire, process.exit
// has run the 'exit' listeners and written what stdout held (Node writes stdout to files and
// pipes synchronously on Linux); what is left of a healthy exit takes milliseconds, so the
// watchdog only ever ends a hung one, with the code the command meant to exit with.
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int32_t ms;
  int32_t code;
} Watch;

static void* Watchdog(void* arg) {
  Watch watch = *(Watch*)arg;
  free(arg);
  struct timespec left = {watch.ms / 1000, (long)(watch.ms % 1000) * 1000000L};
  while (nanosleep(&left, &left) == -1 && errno == EINTR) {
  }
  _exit(watch.code);
  return NULL;
}

static napi_value Throw(napi_env env, const char* message) {
  napi_throw_type_error(env, "FANOUT_EXIT_WATCHDOG", message);
  return NULL;
}

static napi_value ArmExitWatchdog(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t ms = 0, code = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &ms) != napi_ok || napi_get_value_int32(env, argv[1], &code) != napi_ok ||
      ms < 0 || code < 0 || code > 255) {
    return Throw(env, "armExitWatchdog(ms >= 0, code 0-255)");
  }
  Watch* watch = malloc(sizeof *watch);
  if (!watch) return Throw(env, "out of memory");
  watch->ms = ms;
  watch->code = code;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  // Every signal blocked in the new thread (it inherits the mask): signals keep going to Node's.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, Watchdog, watch);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    free(watch);
    return Throw(env, "cannot start the exit watchdog thread");
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "armExitWatchdog", NAPI_AUTO_LENGTH, ArmExitWatchdog, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "armExitWatchdog", fn) != napi_ok) return NULL;
  return exports;
}
