// Argument helpers shared by the small-file addons (native/smallio, native/files): each addon's
// binding.gyp compiles napiutil.c beside its own source, so the two never drift apart.
#ifndef FANOUT_NAPIUTIL_H
#define FANOUT_NAPIUTIL_H

#include <node_api.h>

// A JS string as a NUL-terminated UTF-8 copy the caller frees; NULL when `value` is not a string
// or memory runs out.
char* napiutil_copy_string(napi_env env, napi_value value);

// Throws a TypeError with `message` and returns NULL (what a binding returns after throwing).
napi_value napiutil_throw_type(napi_env env, const char* code, const char* message);

#endif
