{
  "targets": [
    {
      "target_name": "fanout_files",
      "sources": ["files.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
