// Small files held on the native side, so the kernel's getattr, open, read and release of them
// are answered by the FUSE thread that receives them, without a trip to JavaScript.
//
// Why: a tree of small files costs the kernel four or five requests per file (lookup, getattr,
// open, read, release), and each one that crosses to the JavaScript thread pays the thread-safe
// function's hand-off, the handler, and a reply syscall on the one thread that also receives the
// pages. JavaScript hands a file down here once its bytes have arrived (the directory prefetch
// fetches the next files' first pages before they are opened): its attributes, its whole
// content (copied, so the receive slab goes back at once) and how long the version it was read
// at may be trusted (what is left of the mount's stat TTL). Everything else — files not held,
// larger files, expired entries — still goes to JavaScript.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fanout {

// Bytes that are about to be overwritten whole need no zeroing (memset was 2 % of the JS
// thread's time in a perf profile of a small-file walk): vector growth default-initializes.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <typename U>
  UninitializedAllocator(const UninitializedAllocator<U>&) {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using ByteVector = std::vector<char, UninitializedAllocator<char>>;
using Bytes = std::shared_ptr<const ByteVector>;
using SteadyTime = std::chrono::steady_clock::time_point;

// File handles of held files have this bit set; JavaScript's handles are small counters.
constexpr uint64_t kHeldHandle = 1ULL << 62;

struct HeldFile {
  // Where the kernel looks it up (parent 0: not by name, e.g. the parent is not known).
  uint64_t parent = 0;
  std::string name;
  struct stat attr;
  double attrTimeout = 0;  // seconds the kernel may cache the attributes
  SteadyTime expires;
  Bytes data;
  // Opened once already from this entry: later opens may keep the kernel's cached pages,
  // which then are this entry's bytes (the first open invalidates whatever was cached).
  bool opened = false;
};

struct HeldCounters {
  uint64_t lookup = 0;
  uint64_t getattr = 0;
  uint64_t open = 0;
  uint64_t read = 0;
  uint64_t release = 0;
  uint64_t held = 0;     // files handed down
  uint64_t evicted = 0;  // dropped for the memory bound before they expired
};

class HeldFiles {
 public:
  explicit HeldFiles(size_t capacity) : capacity_(capacity) {}

  void SetCapacity(size_t capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    capacity_ = capacity;
    Trim();
  }

  // Memory for a file's bytes: a buffer given back by an earlier file when there is one. Fresh
  // memory costs a page fault per 4 KiB in this kind of VM (the copy into a recycled buffer
  // measured several times cheaper), and held files come and go at the rate files are read.
  ByteVector Buffer(size_t size) {
    std::lock_guard<std::mutex> lock(pool_->mutex);
    for (auto it = pool_->free.begin(); it != pool_->free.end(); ++it) {
      if (it->capacity() >= size && it->capacity() <= 2 * size) {  // never a big buffer for a tiny file
        ByteVector buffer = std::move(*it);
        pool_->bytes -= buffer.capacity();
        pool_->free.erase(it);
        buffer.resize(size);
        return buffer;
      }
    }
    return ByteVector(size);
  }

  // Holds `data` as the whole content of inode `ino` for `validMs` from now (replacing what was
  // held for it). Open handles keep the bytes they opened.
  void Hold(uint64_t ino, uint64_t parent, const std::string& name, const struct stat& attr, double attrTimeout, double validMs,
            ByteVector&& data) {
    std::lock_guard<std::mutex> lock(mutex_);
    Erase(ino);
    if (data.size() > capacity_) return;
    HeldFile file;
    file.parent = parent;
    file.name = name;
    if (parent != 0) names_[NameKey(parent, name)] = ino;
    file.attr = attr;
    file.attrTimeout = attrTimeout;
    file.expires = std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(validMs * 1000));
    bytes_ += data.size();
    // The last holder of the bytes (the entry, or an open handle) gives the buffer back to the pool.
    std::shared_ptr<Pool> pool = pool_;
    size_t poolCap = capacity_;
    file.data = Bytes(new ByteVector(std::move(data)), [pool, poolCap](const ByteVector* bytes) {
      ByteVector* owned = const_cast<ByteVector*>(bytes);
      {
        std::lock_guard<std::mutex> lock(pool->mutex);
        if (pool->bytes + owned->capacity() <= poolCap / 4 && pool->free.size() < 64) {
          pool->bytes += owned->capacity();
          pool->free.push_back(std::move(*owned));
        }
      }
      delete owned;
    });
    files_[ino] = std::move(file);
    order_.push_back(ino);
    counters_.held++;
    Trim();
  }

  void Drop(uint64_t ino) {
    std::lock_guard<std::mutex> lock(mutex_);
    Erase(ino);
  }

  // The entry of `name` in directory `parent` if it is a held, unexpired file: one more kernel
  // reference to it, which the caller tells JavaScript of (its inode table counts them).
  bool Lookup(uint64_t parent, const char* name, fuse_entry_param* entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = names_.find(NameKey(parent, name));
    if (it == names_.end()) return false;
    uint64_t ino = it->second;
    HeldFile* file = Find(ino);
    if (file == nullptr) return false;
    entry->ino = ino;
    entry->generation = 1;
    entry->attr = file->attr;
    entry->attr_timeout = file->attrTimeout;
    entry->entry_timeout = file->attrTimeout;
    counters_.lookup++;
    return true;
  }

  // Attributes of a held, unexpired file.
  bool Getattr(uint64_t ino, struct stat* attr, double* timeout) {
    std::lock_guard<std::mutex> lock(mutex_);
    HeldFile* file = Find(ino);
    if (file == nullptr) return false;
    *attr = file->attr;
    *timeout = file->attrTimeout;
    counters_.getattr++;
    return true;
  }

  // Opens a held, unexpired file: a handle (kHeldHandle set) and whether the kernel's cached
  // pages of it may be kept.
  bool Open(uint64_t ino, uint64_t* fh, bool* keepCache) {
    std::lock_guard<std::mutex> lock(mutex_);
    HeldFile* file = Find(ino);
    if (file == nullptr) return false;
    *keepCache = file->opened;
    file->opened = true;
    *fh = kHeldHandle | nextHandle_++;
    handles_[*fh] = file->data;
    counters_.open++;
    return true;
  }

  // The bytes an open handle reads (null: not a handle of ours).
  Bytes Read(uint64_t fh) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return nullptr;
    counters_.read++;
    return it->second;
  }

  void Release(uint64_t fh) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (handles_.erase(fh) > 0) counters_.release++;
  }

  HeldCounters Counters() {
    std::lock_guard<std::mutex> lock(mutex_);
    return counters_;
  }

  size_t HeldBytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }

 private:
  HeldFile* Find(uint64_t ino) {
    auto it = files_.find(ino);
    if (it == files_.end()) return nullptr;
    if (std::chrono::steady_clock::now() >= it->second.expires) {
      Erase(ino);
      return nullptr;
    }
    return &it->second;
  }

  static std::string NameKey(uint64_t parent, const std::string& name) { return std::to_string(parent) + "/" + name; }

  void Erase(uint64_t ino) {
    auto it = files_.find(ino);
    if (it == files_.end()) return;
    if (it->second.parent != 0) {
      auto named = names_.find(NameKey(it->second.parent, it->second.name));
      if (named != names_.end() && named->second == ino) names_.erase(named);
    }
    bytes_ -= it->second.data->size();
    files_.erase(it);
  }

  // Oldest first out. `order_` may name inodes already erased or held again since; those
  // are skipped, and it is compacted when it grows well past the number of files held.
  void Trim() {
    while (bytes_ > capacity_ && !order_.empty()) {
      uint64_t ino = order_.front();
      order_.pop_front();
      if (files_.count(ino) > 0 && bytes_ > capacity_) {
        Erase(ino);
        counters_.evicted++;
      }
    }
    if (order_.size() > 2 * files_.size() + 1024) {
      std::deque<uint64_t> live;
      std::unordered_map<uint64_t, bool> seen;
      for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
        if (files_.count(*it) > 0 && !seen[*it]) {
          seen[*it] = true;
          live.push_front(*it);
        }
      }
      order_.swap(live);
    }
  }

  // Buffers of files no longer held, for the next ones (a quarter of the capacity at most).
  struct Pool {
    std::mutex mutex;
    std::deque<ByteVector> free;
    size_t bytes = 0;
  };
  std::shared_ptr<Pool> pool_ = std::make_shared<Pool>();

  std::mutex mutex_;
  size_t capacity_;
  size_t bytes_ = 0;
  uint64_t nextHandle_ = 1;
  std::unordered_map<uint64_t, HeldFile> files_;
  std::unordered_map<std::string, uint64_t> names_;  // "parent/name" -> inode
  std::deque<uint64_t> order_;
  std::unordered_map<uint64_t, Bytes> handles_;
  HeldCounters counters_;
};

}  // namespace fanout
