{
  "targets": [
    {
      "target_name": "fanout_checksum",
      "sources": ["crc32.c", "digest.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lz"]
    }
  ]
}
