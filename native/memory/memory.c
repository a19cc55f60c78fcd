// slab(bytes): a Buffer of `bytes` carved from a region of transparent huge pages (2 MiB pages:
// the region is mapped 2 MiB-aligned and madvise(MADV_HUGEPAGE)d), or undefined when no region
// can be mapped (the caller then allocates as usual). For read buffers that are reused for the
// life of a process: the slabs sockets are read into (src/lib/leanhttp/slabs.ts).
//
// Why: the first touch of fresh memory is paid per page fault, and on the VMs these hosts run on
// a fault is dear: 32 MiB touched for the first time took 83–98 ms in 4 KiB pages against 3–6.5 ms
// in 2 MiB pages (a process each, 3 s apart). A `fanout cat` faults its window of slabs in (16–32
// MiB) while the first pages arrive: that was most of the ramp of a fresh command's first pages.
// With THP off ("never"), or no huge page free, the kernel gives 4 KiB pages: nothing is lost.
//
// A region holds REGION_BYTES; each slab holds a reference on its region, and so does the region
// slabs are being carved from. The region is unmapped when its last reference goes: its slabs are
// garbage-collected (their finalizers run on the JS thread: Node's external buffers) and a newer
// region has taken its place.
#define _GNU_SOURCE
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)
#define REGION_BYTES ((size_t)8 << 20)

typedef struct {
  char* base;
  size_t used;
  int refs;
} Region;

static Region* carving;  // the region new slabs come from (JS thread only)

static void drop(Region* region) {
  if (--region->refs > 0) return;
  munmap(region->base, REGION_BYTES);
  free(region);
}

static void on_slab_collected(napi_env env, void* data, void* hint) {
  drop((Region*)hint);
}

// REGION_BYTES of address space aligned to HUGE_PAGE (mapped with a huge page's slack, the slack
// unmapped), advised to be backed by huge pages.
static Region* new_region(void) {
  size_t span = REGION_BYTES + HUGE_PAGE;
  char* raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  char* base = (char*)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (base > raw) munmap(raw, (size_t)(base - raw));
  size_t tail = (size_t)(raw + span - (base + REGION_BYTES));
  if (tail > 0) munmap(base + REGION_BYTES, tail);
  (void)madvise(base, REGION_BYTES, MADV_HUGEPAGE);  // EINVAL without THP: 4 KiB pages then
  Region* region = malloc(sizeof *region);
  if (!region) {
    munmap(base, REGION_BYTES);
    return NULL;
  }
  region->base = base;
  region->used = 0;
  region->refs = 1;  // the carving reference
  return region;
}

static napi_value slab(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int64_t bytes = 0;
  napi_get_undefined(env, &result);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes <= 0 || (size_t)bytes > REGION_BYTES) {
    napi_throw_type_error(env, "FANOUT_MEMORY", "slab(bytes), 0 < bytes <= 8 MiB");
    return NULL;
  }
  if (!carving || REGION_BYTES - carving->used < (size_t)bytes) {
    Region* next = new_region();
    if (!next) return result;
    if (carving) drop(carving);
    carving = next;
  }
  char* at = carving->base + carving->used;
  carving->refs++;
  if (napi_create_external_buffer(env, (size_t)bytes, at, on_slab_collected, carving, &result) != napi_ok) {
    carving->refs--;  // not lent: the carving reference still holds the region
    napi_get_undefined(env, &result);
    return result;
  }
  carving->used += (size_t)bytes;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "slab", NAPI_AUTO_LENGTH, slab, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "slab", fn) != napi_ok) return NULL;
  return exports;
}
