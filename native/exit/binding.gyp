{
  "targets": [
    {
      "target_name": "fanout_exit",
      "sources": ["exit.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
