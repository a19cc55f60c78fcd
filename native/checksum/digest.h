#ifndef FANOUT_DIGEST_H
#define FANOUT_DIGEST_H
#include <node_api.h>

/* Looks up OpenSSL's one-shot SHA256 and SHA512 in the process; 1 when both are there. */
int digest_init(void);
/* digest(name: 'sha256' | 'sha512', data: Buffer): Buffer */
napi_value Digest(napi_env env, napi_callback_info info);

#endif
