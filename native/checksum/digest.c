/*
 * SHA-256 and SHA-512 of short inputs (page keys, ring positions) with OpenSSL's one-shot
 * functions as the process has them: Node's binary exports the OpenSSL it links, so nothing is
 * linked here. Why not node:crypto: loading it costs a short command (a 1-byte `fanout cat`)
 * 5–15 ms of CPU (docs/benchmarks.md), and this addon is loaded anyway for the pages' CRC.
 * Synchronous on the calling thread (inputs of a few hundred bytes).
 */
#include <dlfcn.h>
#include <string.h>
#include "digest.h"

typedef unsigned char *(*ShaFn)(const unsigned char *data, size_t length, unsigned char *md);
static ShaFn sha256_fn;
static ShaFn sha512_fn;

int digest_init(void) {
  if (!sha256_fn) sha256_fn = (ShaFn)dlsym(RTLD_DEFAULT, "SHA256");
  if (!sha512_fn) sha512_fn = (ShaFn)dlsym(RTLD_DEFAULT, "SHA512");
  return sha256_fn != NULL && sha512_fn != NULL;
}

napi_value Digest(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  char name[8] = {0};
  size_t name_length = 0;
  bool is_buffer = false;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_length) != napi_ok ||
      napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer) {
    napi_throw_type_error(env, NULL, "digest(name, data: Buffer)");
    return NULL;
  }
  ShaFn fn = strcmp(name, "sha256") == 0 ? sha256_fn : strcmp(name, "sha512") == 0 ? sha512_fn : NULL;
  size_t size = fn == sha256_fn ? 32 : 64;
  if (!fn) {
    napi_throw_type_error(env, NULL, "digest: sha256 or sha512");
    return NULL;
  }
  void *data = NULL;
  size_t length = 0;
  if (napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) return NULL;
  unsigned char md[64];
  fn((const unsigned char *)data, length, md);
  napi_value result;
  void *out = NULL;
  if (napi_create_buffer_copy(env, size, md, &out, &result) != napi_ok) return NULL;
  return result;
}
