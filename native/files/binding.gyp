{
  "targets": [
    {
      "target_name": "fanout_files",
      "sources": ["files.c", "../common/napiutil.c"],
      "include_dirs": ["../common"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
