// Requests the kernel may interrupt: reads, and the lookups, getattrs, opens, opendirs and statfs
// that wait for the cluster's metadata (a `stat` or `ls` with a stopped worker waited in D state
// until the request's deadline). When the process blocked in read(2) gets a signal, the kernel
// sends FUSE_INTERRUPT and then waits for the read's answer, uninterruptibly once the read is
// with us: without an answer a Ctrl-C (and even SIGKILL) waited until the page arrived or its
// deadline passed (measured: `cat` stayed in D state for 27 s, a Python reader 57 s).
// libfuse calls the request's interrupt function on another FUSE thread; this table turns that
// call into a note for JavaScript, which stops the read's waits and answers it EINTR.
//
// Reads are named by an id of their own, never by a pointer: libfuse may call the interrupt
// function after the read was answered (it takes the function under its lock, then calls it
// without), so nothing it reaches may be freed by the answer. An id no longer here is ignored.
//
// The interrupt may come before JavaScript has the read (libfuse calls the function at once
// when it is registered on a request already interrupted): the table remembers it, and the read
// is answered EINTR when it reaches the JavaScript thread instead of being dispatched.
#pragma once

#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace fanout {

class ReadInterrupts {
 public:
  // A read about to be posted to JavaScript: its id, to register with fuse_req_interrupt_func.
  uint64_t Begin() {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t id = ++next_;
    reads_[id] = State::kPosted;
    return id;
  }

  // On the JavaScript thread, as the read is dispatched: true if it was interrupted already (answer
  // it EINTR, do not dispatch it); from now on an interrupt is told to JavaScript (Interrupt()).
  bool Deliver(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = reads_.find(id);
    if (it == reads_.end()) return false;
    if (it->second == State::kInterrupted) return true;
    it->second = State::kDelivered;
    return false;
  }

  // From libfuse's interrupt function: true if JavaScript has the read and must be told.
  bool Interrupt(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = reads_.find(id);
    if (it == reads_.end()) return false;  // answered already
    if (it->second == State::kDelivered) return true;
    it->second = State::kInterrupted;
    return false;
  }

  // The read is answered (or will never be): later interrupts of it are ignored.
  void End(uint64_t id) {
    if (id == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    reads_.erase(id);
  }

 private:
  enum class State { kPosted, kInterrupted, kDelivered };
  std::mutex mutex_;
  uint64_t next_ = 0;
  std::unordered_map<uint64_t, State> reads_;
};

}  // namespace fanout
