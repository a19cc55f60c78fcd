// What libfuse 3.14 cannot ask for in the INIT reply, patched into it on its way to the kernel
// through libfuse's custom io (fuse_session_custom_io: the session's own read and writev,
// wrapped).
//
// - FUSE_DIRECT_IO_ALLOW_MMAP (kernel ≥ 6.6; libfuse learnt it in 3.16): files opened with
//   direct I/O (no copy into the FUSE page cache) can still be mmapped with MAP_SHARED, which
//   without it fails with ENODEV (Python's mmap, numpy.memmap, safetensors).
// - max_pages above 256: libfuse derives it from max_write, which its 1 MiB receive buffer caps.
//   The mount is read-only, so no request is ever larger than a few bytes, and the pages only
//   bound how large a read the kernel sends (direct I/O reads go to the filesystem one request
//   at a time, so a 4 MiB read in one request instead of four is three round trips fewer).
//   The kernel grants at most its sysctl fs.fuse.max_pages_limit (default 256 = 1 MiB).
#pragma once

#include <linux/fuse.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace fanout {

#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif

struct InitPatch {
  uint16_t wantMaxPages = 0;  // 0: leave libfuse's value
  bool wantDirectIoMmap = false;
  // Filled in while the INIT exchange passes.
  std::atomic<uint64_t> initUnique{0};
  std::atomic<uint64_t> kernelFlags{0};  // what the kernel offered (flags | flags2 << 32)
  std::atomic<bool> done{false};
  std::atomic<uint32_t> sentMaxPages{0};
  std::atomic<bool> directIoMmap{false};  // asked for, and the kernel offered it
};

// The custom io's read (libfuse passes the session's userdata, so fuse.cc calls these): a plain read, noting the INIT request as it passes.
inline ssize_t InitPatchRead(InitPatch* patch, int fd, void* buf, size_t len) {
  ssize_t n = ::read(fd, buf, len);
  if (patch == nullptr || patch->done.load(std::memory_order_relaxed)) return n;
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header) + offsetof(fuse_init_in, flags) + sizeof(uint32_t))) {
    auto* in = static_cast<const fuse_in_header*>(buf);
    if (in->opcode == FUSE_INIT) {
      fuse_init_in init;
      std::memset(&init, 0, sizeof init);
      size_t have = static_cast<size_t>(n) - sizeof(fuse_in_header);
      std::memcpy(&init, static_cast<const char*>(buf) + sizeof(fuse_in_header), have < sizeof init ? have : sizeof init);
      uint64_t flags = init.flags;
      if ((flags & FUSE_INIT_EXT) && have >= offsetof(fuse_init_in, flags2) + sizeof(uint32_t)) flags |= static_cast<uint64_t>(init.flags2) << 32;
      patch->kernelFlags = flags;
      patch->initUnique = in->unique;
    }
  }
  return n;
}

// The custom io's writev: the INIT reply gets the flags and page count libfuse could not ask for.
inline ssize_t InitPatchWritev(InitPatch* patch, int fd, struct iovec* iov, int count) {
  uint64_t unique = patch != nullptr && !patch->done.load(std::memory_order_relaxed) ? patch->initUnique.load() : 0;
  // libfuse sends a reply as [out header, argument]: the argument is do_init's own fuse_init_out.
  if (unique != 0 && count == 2 && iov[0].iov_len == sizeof(fuse_out_header) && iov[1].iov_len >= offsetof(fuse_init_out, unused)) {
    auto* out = static_cast<fuse_out_header*>(iov[0].iov_base);
    if (out->unique == unique && out->error == 0) {
      auto* init = static_cast<fuse_init_out*>(iov[1].iov_base);
      uint64_t offered = patch->kernelFlags;
      if (patch->wantMaxPages > 0 && (offered & FUSE_MAX_PAGES)) {
        init->flags |= FUSE_MAX_PAGES;
        if (patch->wantMaxPages > init->max_pages) init->max_pages = patch->wantMaxPages;
      }
      if (patch->wantDirectIoMmap && (offered & FUSE_INIT_EXT) && (offered & FUSE_DIRECT_IO_ALLOW_MMAP)) {
        init->flags |= FUSE_INIT_EXT;
        init->flags2 |= static_cast<uint32_t>(FUSE_DIRECT_IO_ALLOW_MMAP >> 32);
        patch->directIoMmap = true;
      }
      patch->sentMaxPages = (init->flags & FUSE_MAX_PAGES) ? init->max_pages : 0;
      patch->done = true;
    }
  }
  return ::writev(fd, iov, count);
}

}  // namespace fanout
