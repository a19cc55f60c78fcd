// slab(bytes): a Buffer of `bytes` in transparent huge pages (2 MiB pages: mapped 2 MiB-aligned
// and madvise(MADV_HUGEPAGE)d), or undefined when nothing can be mapped (the caller then allocates
// as usual). For buffers that are kept and reused for the life of a process: the slabs sockets are
// read into (src/lib/leanhttp/slabs.ts), a worker's fill buffers.
//
// Why: the first touch of fresh memory is paid per page fault, and on the VMs these hosts run on
// a fault is dear: 32 MiB touched for the first time took 83–98 ms in 4 KiB pages against 3–6.5 ms
// in 2 MiB pages (a process each, 3 s apart). A `fanout cat` faults its window of slabs in (16–32
// MiB) while the first pages arrive: that was most of the ramp of a fresh command's first pages.
// With THP off ("never"), or no huge page free, the kernel gives 4 KiB pages: nothing is lost.
//
// A buffer of a huge page or more gets a mapping of its own (its size rounded up to huge pages),
// unmapped when it is collected. Smaller ones share one huge page (a region): each holds a
// reference on its region, and so does the region while buffers are carved from it; the page is
// unmapped when the last reference goes. A kept buffer thus holds at most one huge page more than
// itself: with regions of several huge pages, one long-lived slab kept all of them resident
// (30 slabs kept out of 10,000 made and dropped held 290 MiB).
#define _GNU_SOURCE
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)
#define MAX_BYTES ((size_t)64 << 20)

typedef struct {
  char* base;
  size_t size;
  size_t used;
  int refs;
} Region;

// Per addon instance (a worker thread has its own, and its regions): only its JS thread touches it.
typedef struct {
  Region* carving;  // the region small slabs are carved from
} State;

// The mapped bytes are told to V8 as external memory, as Node does for its own Buffers, so that
// garbage slabs count towards its next collection. (Their finalizers, which unmap, run on the JS
// thread between turns of the event loop: 3,000 slabs made and dropped with a turn every ten held
// 119 MiB at the peak, plain Buffers 72 MiB.)
static void account(napi_env env, int64_t bytes) {
  int64_t total;
  napi_adjust_external_memory(env, bytes, &total);
}

static void drop(napi_env env, Region* region) {
  if (--region->refs > 0) return;
  munmap(region->base, region->size);
  account(env, -(int64_t)region->size);
  free(region);
}

static void on_slab_collected(napi_env env, void* data, void* hint) {
  drop(env, (Region*)hint);
}

// `size` bytes (a multiple of HUGE_PAGE) of address space aligned to HUGE_PAGE (mapped with a huge
// page's slack, the slack unmapped), advised to be backed by huge pages; one reference.
static Region* new_region(napi_env env, size_t size) {
  size_t span = size + HUGE_PAGE;
  char* raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char* base = (char*)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (base > raw) munmap(raw, (size_t)(base - raw));
  size_t tail = (size_t)(raw + span - (base + size));
  if (tail > 0) munmap(base + size, tail);
  (void)madvise(base, size, MADV_HUGEPAGE);  // EINVAL without THP: 4 KiB pages then
  Region* region = malloc(sizeof *region);
  if (!region) {
    munmap(base, size);
    return NULL;
  }
  region->base = base;
  region->size = size;
  region->used = 0;
  region->refs = 1;
  account(env, (int64_t)size);
  return region;
}

// A Buffer over [at, at + bytes) of `region`, holding a reference on it (NULL if none can be made).
static napi_value lend(napi_env env, Region* region, char* at, size_t bytes) {
  napi_value result;
  region->refs++;
  if (napi_create_external_buffer(env, bytes, at, on_slab_collected, region, &result) != napi_ok) {
    region->refs--;
    return NULL;
  }
  return result;
}

static napi_value slab(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], undefined, result;
  int64_t bytes = 0;
  napi_get_undefined(env, &undefined);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes <= 0 || (size_t)bytes > MAX_BYTES) {
    napi_throw_type_error(env, "FANOUT_MEMORY", "slab(bytes), 0 < bytes <= 64 MiB");
    return NULL;
  }
  size_t size = (size_t)bytes;
  if (size >= HUGE_PAGE) {  // a mapping of its own; the creation reference passes to the buffer
    Region* own = new_region(env, (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
    if (!own) return undefined;
    result = lend(env, own, own->base, size);
    drop(env, own);
    return result ? result : undefined;
  }
  State* state = NULL;
  if (napi_get_instance_data(env, (void**)&state) != napi_ok || !state) return undefined;
  Region* carving = state->carving;
  if (!carving || carving->size - carving->used < size) {
    Region* next = new_region(env, HUGE_PAGE);
    if (!next) return undefined;
    if (carving) drop(env, carving);  // its carving reference
    carving = state->carving = next;
  }
  result = lend(env, carving, carving->base + carving->used, size);
  if (!result) return undefined;
  carving->used += size;
  return result;
}

// The instance's environment is going away: its carving reference goes (the slabs' own
// references go with their finalizers).
static void free_state(napi_env env, void* data, void* hint) {
  State* state = data;
  Region* carving = state->carving;
  if (carving && --carving->refs == 0) {
    munmap(carving->base, carving->size);
    free(carving);
  }
  free(state);
}

NAPI_MODULE_INIT() {
  State* state = calloc(1, sizeof(State));
  if (!state || napi_set_instance_data(env, state, free_state, NULL) != napi_ok) {
    free(state);
    return NULL;
  }
  napi_value fn;
  if (napi_create_function(env, "slab", NAPI_AUTO_LENGTH, slab, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "slab", fn) != napi_ok) return NULL;
  return exports;
}
