#include "napiutil.h"

#include <stdlib.h>

char* napiutil_copy_string(napi_env env, napi_value value) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return NULL;
  char* out = malloc(length + 1);
  if (!out) return NULL;
  if (napi_get_value_string_utf8(env, value, out, length + 1, &length) != napi_ok) {
    free(out);
    return NULL;
  }
  return out;
}

napi_value napiutil_throw_type(napi_env env, const char* code, const char* message) {
  napi_throw_type_error(env, code, message);
  return NULL;
}
