// Pages JavaScript has fetched and verified, offered here so that a FUSE thread answers a read
// that lies in them itself (writev from JavaScript's buffers), without a trip to the JavaScript
// thread and back per read.
//
// Why: with direct I/O the kernel sends a file's reads one at a time, each waiting for its
// answer; through JavaScript every answer cost a thread hand-off there, the read handler, a wake
// of the waiting FUSE thread and a hand-off back to release the buffers. JavaScript still fetches
// the pages (ahead of the reads, from the notes the FUSE threads post when a read reaches a new
// page) and decides when a page is no longer wanted; the FUSE threads only read its bytes.
//
// Pages are offered per file version (JavaScript's file id), not per open handle: readers of
// one file share them. The buffers belong to JavaScript and stay alive while offered: a withdrawn
// page still being written by a FUSE thread is given back (its offer id) when that write ends.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fanout {

struct OfferedCounters {
  uint64_t served = 0;       // reads answered from offered pages
  uint64_t servedBytes = 0;
  uint64_t missed = 0;       // reads of registered handles that went to JavaScript
  uint64_t offered = 0;
  uint64_t pages = 0;        // offered now
  uint64_t bytes = 0;
};

class OfferedPages {
 public:
  struct Page {
    std::vector<struct iovec> chunks;  // JavaScript's buffers, in order
    size_t size = 0;
    double offerId = 0;
    int inflight = 0;
    bool withdrawn = false;
  };
  using PagePtr = std::shared_ptr<Page>;

  // A read answered here: the segments to write, and the pages to let go of afterwards (End).
  struct Serving {
    std::vector<struct iovec> iov;
    std::vector<PagePtr> pages;
    bool note = false;  // JavaScript should hear of it: the read reached a page not noted before
  };

  explicit OfferedPages(uint64_t pageSize = 4 << 20) : pageSize_(pageSize) {}

  void SetPageSize(uint64_t pageSize) {
    std::lock_guard<std::mutex> lock(mutex_);
    pageSize_ = pageSize;
  }

  // Handle `fh` reads version `fileId` of a file of `size` bytes, in pages of `pageSize` (0: the
  // session's). Called again for an open handle when the mount follows a new cluster page size:
  // the handle moves to another file id whose pages are all of the new size, in one step, so a
  // read is planned either wholly in the old pages or wholly in the new ones.
  void Open(uint64_t fh, uint64_t fileId, uint64_t size, uint64_t pageSize = 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    handles_[fh] = Handle{fileId, size, UINT64_MAX, pageSize != 0 ? pageSize : pageSize_};
  }

  void Release(uint64_t fh) {
    std::lock_guard<std::mutex> lock(mutex_);
    handles_.erase(fh);
  }

  // Offers page `index` of `fileId`; false if that page is offered already (nothing changes).
  // The chunks must add up to the page's length; the caller checks.
  bool Offer(uint64_t fileId, uint64_t index, std::vector<struct iovec> chunks, double offerId) {
    std::lock_guard<std::mutex> lock(mutex_);
    Key key{fileId, index};
    if (pages_.count(key) > 0) return false;
    auto page = std::make_shared<Page>();
    for (const auto& c : chunks) page->size += c.iov_len;
    page->chunks = std::move(chunks);
    page->offerId = offerId;
    bytes_ += page->size;
    pages_[key] = std::move(page);
    counters_.offered++;
    return true;
  }

  // Withdraws an offered page: true if no FUSE thread is writing from it (its buffers may be
  // reused now), false if one is (Done() hands its offer id back when the write ends) or if it
  // was not offered.
  bool Withdraw(uint64_t fileId, uint64_t index, bool* wasOffered = nullptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pages_.find(Key{fileId, index});
    if (wasOffered != nullptr) *wasOffered = it != pages_.end();
    if (it == pages_.end()) return false;
    PagePtr page = std::move(it->second);
    pages_.erase(it);
    bytes_ -= page->size;
    if (page->inflight == 0) return true;
    page->withdrawn = true;
    return false;
  }

  // Plans the answer to a read of [offset, offset + size) on handle `fh`: false if the handle is
  // not registered or a page of the span is not offered (the read goes to JavaScript).
  bool Begin(uint64_t fh, uint64_t offset, size_t size, size_t segment, Serving* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto handle = handles_.find(fh);
    if (handle == handles_.end()) return false;
    Handle& h = handle->second;
    uint64_t end = std::min<uint64_t>(h.size, offset + size);
    if (offset >= end) {
      counters_.served++;
      return true;  // at or past the end: an empty answer
    }
    uint64_t first = offset / h.pageSize;
    uint64_t last = (end - 1) / h.pageSize;
    out->pages.clear();
    for (uint64_t index = first; index <= last; index++) {
      auto it = pages_.find(Key{h.fileId, index});
      if (it == pages_.end()) {
        counters_.missed++;
        out->pages.clear();
        return false;
      }
      out->pages.push_back(it->second);
    }
    out->iov.clear();
    for (uint64_t index = first; index <= last; index++) {
      const Page& page = *out->pages[index - first];
      uint64_t base = index * h.pageSize;
      uint64_t from = std::max(offset, base) - base;
      uint64_t to = std::min<uint64_t>(end - base, page.size);
      AppendRange(page, from, to, segment, &out->iov);
    }
    for (auto& page : out->pages) page->inflight++;
    out->note = h.notedPage == UINT64_MAX || last > h.notedPage || first < h.notedPage;
    if (out->note) h.notedPage = last;
    counters_.served++;
    counters_.servedBytes += end - offset;
    return true;
  }

  // The answer is written: offer ids of withdrawn pages nobody writes from any more.
  std::vector<double> Done(Serving* serving) {
    std::vector<double> returned;
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& page : serving->pages) {
      if (--page->inflight == 0 && page->withdrawn) returned.push_back(page->offerId);
    }
    serving->pages.clear();
    return returned;
  }

  OfferedCounters Counters() {
    std::lock_guard<std::mutex> lock(mutex_);
    OfferedCounters c = counters_;
    c.pages = pages_.size();
    c.bytes = bytes_;
    return c;
  }

 private:
  struct Key {
    uint64_t file;
    uint64_t index;
    bool operator==(const Key& o) const { return file == o.file && index == o.index; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return std::hash<uint64_t>()(k.file * 0x9E3779B97F4A7C15ULL ^ k.index); }
  };
  struct Handle {
    uint64_t fileId;
    uint64_t size;
    uint64_t notedPage;
    uint64_t pageSize;  // the size its file id's pages are counted in
  };

  // Bytes [from, to) of a page's chunks, in segments of at most `segment` bytes (the kernel
  // copies one huge segment markedly slower than the same bytes in 64 KiB ones).
  static void AppendRange(const Page& page, uint64_t from, uint64_t to, size_t segment, std::vector<struct iovec>* iov) {
    uint64_t at = 0;
    for (const auto& chunk : page.chunks) {
      uint64_t chunkEnd = at + chunk.iov_len;
      uint64_t a = std::max(from, at);
      uint64_t b = std::min<uint64_t>(to, chunkEnd);
      for (uint64_t s = a; s < b; s += segment) {
        iov->push_back({static_cast<char*>(chunk.iov_base) + (s - at), static_cast<size_t>(std::min<uint64_t>(segment, b - s))});
      }
      at = chunkEnd;
      if (at >= to) break;
    }
  }

  std::mutex mutex_;
  uint64_t pageSize_;
  std::unordered_map<Key, PagePtr, KeyHash> pages_;
  std::unordered_map<uint64_t, Handle> handles_;
  size_t bytes_ = 0;
  OfferedCounters counters_;
};

}  // namespace fanout
