{
  "targets": [
    {
      "target_name": "fanout_sendfile",
      "sources": ["sendfile.c", "sendpool.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
