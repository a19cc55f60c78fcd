{
  "targets": [
    {
      "target_name": "fanout_fuse",
      "sources": ["fuse.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I fuse3 | sed -e 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs fuse3)"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "FUSE_USE_VERSION=312"],
      "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    }
  ]
}
