{
  "targets": [
    {
      "target_name": "fanout_memory",
      "sources": ["memory.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
