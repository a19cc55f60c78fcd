/*
 * CRC-32 (the zlib/gzip polynomial, the checksum in page file names and x-fanout-crc32) with
 * carry-less multiplication: four 128-bit lanes folded 64 bytes at a time, then a Barrett
 * reduction (Intel, "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", 2009; the
 * same constants as Linux's crc32-pclmul and Chromium's zlib). Node's zlib.crc32 runs the table
 * version at about 3 GB/s on this machine: every reader checks every page, so that was a fifth of
 * `fanout cat`'s CPU. The tail (< 16 bytes) and CPUs without PCLMUL go to the system's zlib.
 * Synchronous on the calling thread: a 4 MiB page takes well under a millisecond.
 */
#include <node_api.h>
#include "digest.h"
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <zlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_CLMUL_PATH 1

static const uint64_t k1k2[2] __attribute__((aligned(16))) = {0x0154442bd4ULL, 0x01c6e41596ULL};
static const uint64_t k3k4[2] __attribute__((aligned(16))) = {0x01751997d0ULL, 0x00ccaa009eULL};
static const uint64_t k5k0[2] __attribute__((aligned(16))) = {0x0163cd6124ULL, 0x0000000000ULL};
static const uint64_t poly[2] __attribute__((aligned(16))) = {0x01db710641ULL, 0x01f7011641ULL};

static uint32_t crc32_finish(__m128i x1, __m128i x2, __m128i x3, __m128i x4, const unsigned char *buf, size_t len);

/* `crc` is the inner (pre-inverted) state; len >= 64 and a multiple of 16. */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crc32_clmul(const unsigned char *buf, size_t len, uint32_t crc) {
  __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;
  x1 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
  x2 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
  x3 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
  x4 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
  x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
  x0 = _mm_load_si128((const __m128i *)k1k2);
  buf += 64;
  len -= 64;

  while (len >= 64) {
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
    x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
    x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
    x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
    y5 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
    y6 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
    y7 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
    y8 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
    x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
    x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
    x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
    buf += 64;
    len -= 64;
  }
  return crc32_finish(x1, x2, x3, x4, buf, len);
}

/* Four 128-bit lanes (64 bytes apart in the stream) and the rest (< 64 bytes, a multiple of 16) to the CRC. */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crc32_finish(__m128i x1, __m128i x2, __m128i x3, __m128i x4, const unsigned char *buf, size_t len) {
  __m128i x0, x5;
  /* Fold the four lanes into one. */
  x0 = _mm_load_si128((const __m128i *)k3k4);
  x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
  x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
  x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
  x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
  x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
  x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
  x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
  x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
  x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);

  while (len >= 16) {
    x2 = _mm_loadu_si128((const __m128i *)buf);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    buf += 16;
    len -= 16;
  }

  /* 128 bits to 64. */
  x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
  x3 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_srli_si128(x1, 8);
  x1 = _mm_xor_si128(x1, x2);
  x0 = _mm_loadl_epi64((const __m128i *)k5k0);
  x2 = _mm_srli_si128(x1, 4);
  x1 = _mm_and_si128(x1, x3);
  x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
  x1 = _mm_xor_si128(x1, x2);

  /* Barrett reduction to 32 bits. */
  x0 = _mm_load_si128((const __m128i *)poly);
  x2 = _mm_and_si128(x1, x3);
  x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
  x2 = _mm_and_si128(x2, x3);
  x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
  x1 = _mm_xor_si128(x1, x2);
  return (uint32_t)_mm_extract_epi32(x1, 1);
}

/*
 * The same folding with VPCLMULQDQ on 512-bit registers: four registers of four lanes each,
 * 256 bytes a round, folded by x^(2048±32) mod P (computed like k1k2, which is x^(512±32)),
 * then to one register by k1k2 and handed to crc32_finish as four 128-bit lanes. About twice
 * the speed of the 128-bit loop on a hot buffer here; every reader runs it over every byte.
 */
static const uint64_t k256[2] __attribute__((aligned(16))) = {0x011542778aULL, 0x01322d1430ULL};

__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.1")))
static inline __m512i fold512(__m512i z, __m512i k, __m512i next) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z, k, 0x00), _mm512_clmulepi64_epi128(z, k, 0x11), next, 0x96);
}

/* `crc` is the inner state; len >= 256 and a multiple of 16. */
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.1")))
static uint32_t crc32_vclmul(const unsigned char *buf, size_t len, uint32_t crc) {
  __m512i z0 = _mm512_loadu_si512((const void *)(buf + 0x00));
  __m512i z1 = _mm512_loadu_si512((const void *)(buf + 0x40));
  __m512i z2 = _mm512_loadu_si512((const void *)(buf + 0x80));
  __m512i z3 = _mm512_loadu_si512((const void *)(buf + 0xc0));
  z0 = _mm512_xor_si512(z0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
  buf += 256;
  len -= 256;
  __m512i k = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)k256));
  while (len >= 256) {
    z0 = fold512(z0, k, _mm512_loadu_si512((const void *)(buf + 0x00)));
    z1 = fold512(z1, k, _mm512_loadu_si512((const void *)(buf + 0x40)));
    z2 = fold512(z2, k, _mm512_loadu_si512((const void *)(buf + 0x80)));
    z3 = fold512(z3, k, _mm512_loadu_si512((const void *)(buf + 0xc0)));
    buf += 256;
    len -= 256;
  }
  k = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)k1k2));
  z0 = fold512(z0, k, z1);
  z0 = fold512(z0, k, z2);
  z0 = fold512(z0, k, z3);
  while (len >= 64) {
    z0 = fold512(z0, k, _mm512_loadu_si512((const void *)buf));
    buf += 64;
    len -= 64;
  }
  return crc32_finish(_mm512_extracti32x4_epi32(z0, 0), _mm512_extracti32x4_epi32(z0, 1), _mm512_extracti32x4_epi32(z0, 2), _mm512_extracti32x4_epi32(z0, 3), buf, len);
}
#endif

static int use_clmul = 0;
static int use_vclmul = 0;

/* zlib's convention: `crc` is the value so far (0 to start), the result the value after `buf`. */
static uint32_t crc32_update(uint32_t crc, const unsigned char *buf, size_t len) {
#ifdef HAVE_CLMUL_PATH
  if (use_clmul && len >= 64) {
    size_t bulk = len & ~(size_t)15;
    crc = use_vclmul && bulk >= 256 ? ~crc32_vclmul(buf, bulk, ~crc) : ~crc32_clmul(buf, bulk, ~crc);
    buf += bulk;
    len -= bulk;
  }
#endif
  while (len > 0) { /* zlib takes a uInt length */
    uInt n = len > 0x40000000 ? 0x40000000 : (uInt)len;
    crc = (uint32_t)crc32(crc, buf, n);
    buf += n;
    len -= n;
  }
  return crc;
}

/* crc32(data: ArrayBufferView, crc?: number): number */
static napi_value Crc32(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "crc32: data is required");
    return NULL;
  }
  void *data = NULL;
  size_t length = 0;
  bool is_typed = false, is_view = false;
  napi_is_typedarray(env, argv[0], &is_typed);
  if (is_typed) {
    napi_typedarray_type type;
    size_t elements = 0, offset = 0;
    napi_value ab;
    if (napi_get_typedarray_info(env, argv[0], &type, &elements, &data, &ab, &offset) != napi_ok) return NULL;
    size_t width = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: width = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: width = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: width = 8; break;
      default: width = 1;
    }
    length = elements * width;
  } else {
    napi_is_dataview(env, argv[0], &is_view);
    if (!is_view) {
      napi_throw_type_error(env, NULL, "crc32: data must be a Buffer, TypedArray or DataView");
      return NULL;
    }
    napi_value ab;
    size_t offset = 0;
    if (napi_get_dataview_info(env, argv[0], &length, &data, &ab, &offset) != napi_ok) return NULL;
  }
  uint32_t crc = 0;
  if (argc >= 2) {
    napi_valuetype t;
    napi_typeof(env, argv[1], &t);
    if (t == napi_number) napi_get_value_uint32(env, argv[1], &crc);
    else if (t != napi_undefined) {
      napi_throw_type_error(env, NULL, "crc32: crc must be a number");
      return NULL;
    }
  }
  napi_value result;
  napi_create_uint32(env, crc32_update(crc, (const unsigned char *)data, length), &result);
  return result;
}

/* "vclmul", "clmul" or "table": which way this CPU computes (shown by the JS side). */
static napi_value Kind(napi_env env, napi_callback_info info) {
  napi_value result;
  const char *kind = use_vclmul ? "vclmul" : use_clmul ? "clmul" : "table";
  napi_create_string_utf8(env, kind, NAPI_AUTO_LENGTH, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
#ifdef HAVE_CLMUL_PATH
  __builtin_cpu_init();
  use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  use_vclmul = use_clmul && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") && !getenv("FANOUT_CRC32_NO_AVX512");
#endif
  napi_property_descriptor props[] = {
    {"crc32", NULL, Crc32, NULL, NULL, NULL, napi_default, NULL},
    {"kind", NULL, Kind, NULL, NULL, NULL, napi_default, NULL},
    {"digest", NULL, Digest, NULL, NULL, NULL, napi_default, NULL},
  };
  /* digest only where the process has OpenSSL's SHA256 and SHA512 (the JS side uses node:crypto otherwise). */
  size_t count = sizeof(props) / sizeof(props[0]) - (digest_init() ? 0 : 1);
  napi_define_properties(env, exports, count, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
