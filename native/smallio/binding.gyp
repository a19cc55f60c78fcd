{
  "targets": [
    {
      "target_name": "fanout_smallio",
      "sources": ["smallio.c", "../common/napiutil.c"],
      "include_dirs": ["../common"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lm"]
    }
  ]
}
