// fanout's bridge to libfuse3: the low-level API on a multithreaded loop. Every request is
// handed to JavaScript through one thread-safe function and answered from there, later, with
// the reply functions below, so many requests (reads of one file or of many) are in flight at
// once. Metadata replies are sent from the JavaScript thread. A read's FUSE thread waits for
// its answer instead and writes the page buffers JavaScript holds to /dev/fuse itself (writev,
// no copy in between): that kernel copy costs more than the network read, and on the FUSE
// threads it runs beside the JavaScript thread rather than on it.
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <napi.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "held.h"
#include "init.h"
#include "interrupts.h"
#include "offered.h"

namespace {

using fanout::HeldFiles;
using fanout::kHeldHandle;
using fanout::OfferedPages;
using fanout::ReadInterrupts;

// Numbers, not strings: they cross to JavaScript on every request. Kept in step with OPS in
// src/mount/native.ts.
enum Op : int {
  kLookup = 0,
  kForget = 1,
  kGetattr = 2,
  kOpen = 3,
  kRead = 4,
  kRelease = 5,
  kOpendir = 6,
  kReaddir = 7,
  kReleasedir = 8,
  kStatfs = 9,
  kExited = 10,
  kUnref = 11,  // internal: the JS buffers of a sent read reply may be released
  kReplied = 12,  // to JS: the read reply carrying this token is written (its pages may be reused)
  kReaddirplus = 13,
  kOpenedHeld = 14,  // to JS: a held file (held.h) was opened here; JS's directory prefetch follows opens
  kLookedUpHeld = 15,  // to JS: a held file was looked up here (one more kernel reference to count)
  kServed = 16,  // to JS: a read was answered here from offered pages (offered.h) and reached a new page
  kReturned = 17,  // to JS: withdrawn offered pages no FUSE thread writes from any more (their offer ids)
  kInterrupted = 18,  // to JS: the request with this interrupt id was interrupted (interrupts.h)
};

// A read's FUSE thread waits here for JavaScript's answer, then sends it.
struct ReadWait {
  std::mutex mutex;
  std::condition_variable cv;
  bool ready = false;
  int error = 0;
  std::vector<struct iovec> iov;
  std::vector<napi_ref> refs;  // keep the buffers alive until the reply is written
  double token = 0;  // nonzero: told back to JS (kReplied) once the reply is written

  void Finish(int err) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      error = err;
      ready = true;
    }
    cv.notify_one();
  }
};

struct Call {
  Op op;
  fuse_req_t req = nullptr;  // null for forget and exited: nothing to answer
  fuse_ino_t ino = 0;
  std::string name;
  uint64_t fh = 0;
  uint64_t offset = 0;
  uint64_t count = 0;  // read/readdir size, forget nlookup, exited status
  int flags = 0;
  ReadWait* wait = nullptr;  // reads: the waiting FUSE thread
  std::vector<napi_ref> refs;  // kUnref
  double token = 0;  // kUnref: the reply's token
  std::vector<double> ids;  // kReturned: offer ids
  uint64_t id = 0;  // an interruptible request's interrupt id (interrupts.h); kInterrupted: the request's
};

struct Session;

// One request waiting for JavaScript. Owned by the JS External that carries it: if JavaScript
// drops it without answering, the finalizer answers EIO so the kernel never waits forever.
struct Request {
  fuse_req_t req;
  ReadWait* wait;
  ReadInterrupts* interrupts;  // no longer interruptible once claimed
  uint64_t id;
  std::atomic<bool> answered{false};
  Request(fuse_req_t r, ReadWait* w, ReadInterrupts* i, uint64_t id) : req(r), wait(w), interrupts(i), id(id) {}
  bool Claim() {
    bool expected = false;
    if (!answered.compare_exchange_strong(expected, true)) return false;
    interrupts->End(id);
    return true;
  }
};

// Answers with an error, on this thread or, for a waiting read, on its FUSE thread.
void AnswerError(fuse_req_t req, ReadWait* wait, int err) {
  if (wait != nullptr) {
    wait->Finish(err);
  } else {
    fuse_reply_err(req, err);
  }
}

void PostForget(Session* session, fuse_ino_t ino, uint64_t nlookup);
void CallJs(Napi::Env env, Napi::Function dispatch, Session* session, Call* call);
using Tsfn = Napi::TypedThreadSafeFunction<Session, Call, CallJs>;

struct Session {
  fuse_session* se = nullptr;
  Tsfn tsfn;
  uint32_t maxRead = 1 << 20;
  uint32_t maxReadahead = 1 << 20;
  uint32_t threads = 32;
  bool cloneFd = true;
  std::atomic<bool> unmounted{false};
  HeldFiles held{16 << 20};
  OfferedPages offered;
  ReadInterrupts interrupts;
  fanout::InitPatch init;
};

// Attribute block size reported to stat(): cat, cp and dd size their reads from it.
uint32_t g_blksize = 1 << 20;

// Hands a call to JavaScript; false (and the request answered EIO) if the session is closing.
bool Post(Session* session, Call* call) {
  if (session->tsfn.NonBlockingCall(call) == napi_ok) return true;
  session->interrupts.End(call->id);
  if (call->req != nullptr) fuse_reply_err(call->req, EIO);
  delete call;
  return false;
}

Session* SessionOf(fuse_req_t req) { return static_cast<Session*>(fuse_req_userdata(req)); }

bool Forward(fuse_req_t req, Op op, fuse_ino_t ino, Call* call = nullptr) {
  if (call == nullptr) call = new Call();
  call->op = op;
  call->req = req;
  call->ino = ino;
  return Post(SessionOf(req), call);
}

void LlInit(void* userdata, fuse_conn_info* conn) {
  auto* session = static_cast<Session*>(userdata);
  // max_read must be given both here and as the max_read mount option (libfuse's note).
  conn->max_read = session->maxRead;
  // The kernel keeps the smaller of this and its own default; the mount raises the device's
  // read_ahead_kb afterwards.
  conn->max_readahead = session->maxReadahead;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // Listings carry every entry's attributes (readdirplus), always: `find` then `cat` of a tree
  // finds each name already looked up instead of a lookup round trip per file.
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  }
}

bool ForwardInterruptible(fuse_req_t req, Op op, fuse_ino_t ino, Call* call = nullptr);

void LlLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Session* session = SessionOf(req);
  fuse_entry_param entry;
  std::memset(&entry, 0, sizeof entry);
  if (session->held.Lookup(parent, name, &entry)) {
    // JavaScript hears of the reference before the kernel can forget it: a FORGET for it is
    // queued after this note, never before.
    auto* note = new Call();
    note->op = kLookedUpHeld;
    note->ino = entry.ino;
    note->name = name;
    note->fh = parent;
    if (Post(session, note)) {
      if (fuse_reply_entry(req, &entry) != 0) PostForget(session, entry.ino, 1);  // the kernel took no reference
      return;
    }
  }
  auto* call = new Call();
  call->name = name;
  ForwardInterruptible(req, kLookup, parent, call);
}

void PostForget(Session* session, fuse_ino_t ino, uint64_t nlookup) {
  auto* call = new Call();
  call->op = kForget;
  call->ino = ino;
  call->count = nlookup;
  Post(session, call);
}

void LlForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Session* session = SessionOf(req);
  fuse_reply_none(req);
  PostForget(session, ino, nlookup);
}

void LlForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Session* session = SessionOf(req);
  for (size_t i = 0; i < count; i++) PostForget(session, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void LlGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat attr;
  double timeout;
  if (SessionOf(req)->held.Getattr(ino, &attr, &timeout)) {
    fuse_reply_attr(req, &attr, timeout);
    return;
  }
  ForwardInterruptible(req, kGetattr, ino);
}

void LlOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Session* session = SessionOf(req);
  bool readOnly = (fi->flags & O_ACCMODE) == O_RDONLY && (fi->flags & O_TRUNC) == 0;
  bool keepCache = false;
  if (readOnly && session->held.Open(ino, &fi->fh, &keepCache)) {
    fi->keep_cache = keepCache ? 1 : 0;
    if (fuse_reply_open(req, fi) != 0) session->held.Release(fi->fh);  // the opener is gone
    auto* call = new Call();
    call->op = kOpenedHeld;
    call->ino = ino;
    Post(session, call);
    return;
  }
  auto* call = new Call();
  call->flags = fi->flags;
  ForwardInterruptible(req, kOpen, ino, call);
}

// Reads up to this size are answered from the JavaScript thread like metadata: copying 128 KiB
// there costs less than the two thread hand-offs (wake this thread, then post the release back)
// that a waiting read takes, and small files are read in one such request each.
constexpr size_t kDirectReadMax = 128 * 1024;

constexpr size_t kSegment = 64 * 1024;

void PostReturned(Session* session, std::vector<double>&& ids) {
  if (ids.empty()) return;
  auto* call = new Call();
  call->op = kReturned;
  call->ids = std::move(ids);
  Post(session, call);  // if the session is closing the pages just stay leased
}

// A read whose span lies in offered pages is answered on this thread; JavaScript hears of it
// only when it reaches a page not noted before (it moves its readahead window then).
bool ServeOffered(Session* session, fuse_req_t req, uint64_t fh, size_t size, off_t off) {
  OfferedPages::Serving serving;
  if (!session->offered.Begin(fh, static_cast<uint64_t>(off), size, kSegment, &serving)) return false;
  if (serving.iov.empty()) {
    fuse_reply_buf(req, nullptr, 0);
  } else {
    fuse_reply_iov(req, serving.iov.data(), static_cast<int>(serving.iov.size()));
  }
  PostReturned(session, session->offered.Done(&serving));
  if (serving.note) {
    auto* call = new Call();
    call->op = kServed;
    call->fh = fh;
    call->offset = static_cast<uint64_t>(off);
    call->count = size;
    Post(session, call);
  }
  return true;
}

// libfuse's interrupt function (on the FUSE thread that received FUSE_INTERRUPT): `data` is the
// read's id, not a pointer (interrupts.h says why).
void OnInterrupt(fuse_req_t req, void* data) {
  Session* session = SessionOf(req);
  uint64_t id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data));
  if (!session->interrupts.Interrupt(id)) return;
  auto* note = new Call();
  note->op = kInterrupted;
  note->id = id;
  Post(session, note);
}

// A request JavaScript answers that may wait on the network (a read's pages, a lookup's listing):
// interruptible from now on (the caller's Ctrl-C ends its wait there).
bool ForwardInterruptible(fuse_req_t req, Op op, fuse_ino_t ino, Call* call) {
  if (call == nullptr) call = new Call();
  Session* session = SessionOf(req);
  call->id = session->interrupts.Begin();
  fuse_req_interrupt_func(req, OnInterrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(call->id)));
  return Forward(req, op, ino, call);
}

void LlRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Session* session = SessionOf(req);
  if (fi->fh & kHeldHandle) {
    fanout::Bytes data = session->held.Read(fi->fh);
    if (data == nullptr) {
      fuse_reply_err(req, EBADF);
    } else {
      size_t at = std::min(static_cast<size_t>(off), data->size());
      fuse_reply_buf(req, data->data() + at, std::min(size, data->size() - at));
    }
    return;
  }
  if (ServeOffered(session, req, fi->fh, size, off)) return;
  if (size <= kDirectReadMax) {
    auto* call = new Call();
    call->fh = fi->fh;
    call->offset = static_cast<uint64_t>(off);
    call->count = size;
    ForwardInterruptible(req, kRead, ino, call);
    return;
  }
  ReadWait wait;
  auto* call = new Call();
  call->fh = fi->fh;
  call->offset = static_cast<uint64_t>(off);
  call->count = size;
  call->wait = &wait;
  if (!ForwardInterruptible(req, kRead, ino, call)) return;
  {
    std::unique_lock<std::mutex> lock(wait.mutex);
    wait.cv.wait(lock, [&] { return wait.ready; });
  }
  if (wait.error != 0) {
    fuse_reply_err(req, wait.error);
  } else if (wait.iov.empty()) {
    fuse_reply_buf(req, nullptr, 0);
  } else {
    fuse_reply_iov(req, wait.iov.data(), static_cast<int>(wait.iov.size()));
  }
  if (!wait.refs.empty() || wait.token != 0) {
    auto* unref = new Call();
    unref->op = kUnref;
    unref->refs = std::move(wait.refs);
    unref->token = wait.token;
    Post(session, unref);  // if the session is closing the buffers just stay referenced
  }
}

void LlRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  SessionOf(req)->offered.Release(fi->fh);
  if (fi->fh & kHeldHandle) {
    SessionOf(req)->held.Release(fi->fh);
    fuse_reply_err(req, 0);
    return;
  }
  auto* call = new Call();
  call->fh = fi->fh;
  Forward(req, kRelease, ino, call);
}

// The listing is fetched at opendir; readdir answers from it at once (nothing to interrupt).
void LlOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) { ForwardInterruptible(req, kOpendir, ino); }

void LlReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  auto* call = new Call();
  call->fh = fi->fh;
  call->offset = static_cast<uint64_t>(off);
  call->count = size;
  Forward(req, kReaddir, ino, call);
}

void LlReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  auto* call = new Call();
  call->fh = fi->fh;
  call->offset = static_cast<uint64_t>(off);
  call->count = size;
  Forward(req, kReaddirplus, ino, call);
}

void LlReleasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* call = new Call();
  call->fh = fi->fh;
  Forward(req, kReleasedir, ino, call);
}

void LlStatfs(fuse_req_t req, fuse_ino_t ino) { ForwardInterruptible(req, kStatfs, ino); }

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = LlInit;
  ops.lookup = LlLookup;
  ops.forget = LlForget;
  ops.forget_multi = LlForgetMulti;
  ops.getattr = LlGetattr;
  ops.open = LlOpen;
  ops.read = LlRead;
  ops.release = LlRelease;
  ops.opendir = LlOpendir;
  ops.readdir = LlReaddir;
  ops.readdirplus = LlReaddirplus;
  ops.releasedir = LlReleasedir;
  ops.statfs = LlStatfs;
  return ops;
}();

void FinalizeRequest(Napi::Env, Request* request) {
  if (request->Claim()) AnswerError(request->req, request->wait, EIO);
  delete request;
}

// A note to JavaScript with nothing to answer: dispatch(op, undefined, 0, value).
void Note(Napi::Env env, Napi::Function dispatch, Op op, Napi::Value value) {
  dispatch.Call({Napi::Number::New(env, op), env.Undefined(), Napi::Number::New(env, 0), value});
  if (env.IsExceptionPending()) {
    Napi::Error error = env.GetAndClearPendingException();
    fprintf(stderr, "fanout mount: dispatcher threw: %s\n", error.Message().c_str());
  }
}

void CallJs(Napi::Env env, Napi::Function dispatch, Session* session, Call* call) {
  if (env == nullptr) {  // the environment is going away: answer what can be answered
    session->interrupts.End(call->id);
    if (call->req != nullptr) AnswerError(call->req, call->wait, EIO);
    delete call;
    return;
  }
  if (call->id != 0 && call->op != kInterrupted && session->interrupts.Deliver(call->id)) {
    // Interrupted before JavaScript had it: nothing to stop there.
    session->interrupts.End(call->id);
    AnswerError(call->req, call->wait, EINTR);
    delete call;
    return;
  }
  if (call->op == kInterrupted) {
    double id = static_cast<double>(call->id);
    delete call;
    Note(env, dispatch, kInterrupted, Napi::Number::New(env, id));
    return;
  }
  if (call->op == kUnref) {
    for (napi_ref ref : call->refs) napi_delete_reference(env, ref);
    double token = call->token;
    delete call;
    if (token != 0) Note(env, dispatch, kReplied, Napi::Number::New(env, token));
    return;
  }
  if (call->op == kReturned) {
    Napi::Array ids = Napi::Array::New(env, call->ids.size());
    for (uint32_t i = 0; i < call->ids.size(); i++) ids.Set(i, Napi::Number::New(env, call->ids[i]));
    delete call;
    Note(env, dispatch, kReturned, ids);
    return;
  }
  Request* request = call->req != nullptr ? new Request(call->req, call->wait, &session->interrupts, call->id) : nullptr;
  Napi::Value req = request != nullptr ? Napi::Value(Napi::External<Request>::New(env, request, FinalizeRequest)) : env.Undefined();
  auto num = [&](double v) { return Napi::Number::New(env, v); };
  std::vector<napi_value> args = {num(call->op), req, num(static_cast<double>(call->ino))};
  switch (call->op) {
    case kLookup:
      args.push_back(Napi::String::New(env, call->name));
      break;
    case kLookedUpHeld:
      args.push_back(Napi::String::New(env, call->name));
      args.push_back(num(static_cast<double>(call->fh)));  // the parent directory
      break;
    case kForget:
    case kExited:
      args.push_back(num(static_cast<double>(call->count)));
      break;
    case kOpen:
      args.push_back(num(call->flags));
      break;
    case kRead:
    case kServed:
    case kReaddir:
    case kReaddirplus:
      args.push_back(num(static_cast<double>(call->fh)));
      args.push_back(num(static_cast<double>(call->offset)));
      args.push_back(num(static_cast<double>(call->count)));
      break;
    case kRelease:
    case kReleasedir:
      args.push_back(num(static_cast<double>(call->fh)));
      break;
    default:
      break;
  }
  if (call->id != 0) {
    // The interrupt id is the 7th argument of every interruptible request (OPS.INTERRUPTED names it).
    while (args.size() < 6) args.push_back(env.Undefined());
    args.push_back(num(static_cast<double>(call->id)));
  }
  delete call;
  dispatch.Call(args);
  if (env.IsExceptionPending()) {
    // The dispatcher catches its own errors; this is a bug, but the kernel still gets an answer.
    Napi::Error error = env.GetAndClearPendingException();
    fprintf(stderr, "fanout mount: dispatcher threw: %s\n", error.Message().c_str());
    if (request != nullptr && request->Claim()) AnswerError(request->req, request->wait, EIO);
  }
}

// ---- replies (called from JavaScript, on the main thread) ----

Request* Claim(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "first argument must be a request").ThrowAsJavaScriptException();
    return nullptr;
  }
  Request* request = info[0].As<Napi::External<Request>>().Data();
  if (!request->Claim()) {
    Napi::Error::New(info.Env(), "request already answered").ThrowAsJavaScriptException();
    return nullptr;
  }
  return request;
}

double Num(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().DoubleValue(); }

struct timespec FromMs(double ms) {
  struct timespec ts;
  double seconds = ms / 1000.0;
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((ms - static_cast<double>(ts.tv_sec) * 1000.0) * 1e6);
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  return ts;
}

// The attributes besides inode and mode: size (negative: 0), times, links, owner, blocks.
void FillStat(struct stat* st, double size, double mtimeMs) {
  st->st_size = size > 0 ? static_cast<off_t>(size) : 0;
  st->st_mtim = st->st_ctim = st->st_atim = FromMs(mtimeMs);
  st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_blksize = g_blksize;
  st->st_blocks = (st->st_size + 511) / 512;
}

// (ino, mode, size, mtimeMs) starting at argument `i`.
struct stat MakeStat(const Napi::CallbackInfo& info, size_t i) {
  struct stat st;
  std::memset(&st, 0, sizeof st);
  st.st_ino = static_cast<ino_t>(Num(info, i));
  st.st_mode = static_cast<mode_t>(Num(info, i + 1));
  FillStat(&st, Num(info, i + 2), Num(info, i + 3));
  return st;
}

void ReplyError(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r != nullptr) AnswerError(r->req, r->wait, static_cast<int>(Num(info, 1)));
}

// replyEntry(req, ino, mode, size, mtimeMs, attrTimeoutS, entryTimeoutS); ino 0 = negative entry.
void ReplyEntry(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return;
  fuse_entry_param entry;
  std::memset(&entry, 0, sizeof entry);
  entry.attr = MakeStat(info, 1);
  entry.ino = entry.attr.st_ino;
  entry.generation = 1;
  entry.attr_timeout = Num(info, 5);
  entry.entry_timeout = Num(info, 6);
  fuse_reply_entry(r->req, &entry);
}

// replyAttr(req, ino, mode, size, mtimeMs, attrTimeoutS)
void ReplyAttr(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return;
  struct stat st = MakeStat(info, 1);
  fuse_reply_attr(r->req, &st, Num(info, 5));
}

// replyOpen(req, fh, keepCache, directIo): direct I/O reads skip the kernel's page cache (one
// copy fewer per byte; mmap still works where the kernel allows it, init.h).
void ReplyOpen(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return;
  fuse_file_info fi;
  std::memset(&fi, 0, sizeof fi);
  fi.fh = static_cast<uint64_t>(Num(info, 1));
  fi.keep_cache = info[2].ToBoolean().Value() ? 1 : 0;
  fi.direct_io = info.Length() > 3 && info[3].ToBoolean().Value() ? 1 : 0;
  fuse_reply_open(r->req, &fi);
}

// replyData(req, buffers[], token?) -> written: the buffers are written to the kernel as they
// are (writev). A large read's FUSE thread does it, holding references to them until then, and
// a nonzero token is dispatched back (kReplied) once they are written, so their memory can be
// reused; a small read is written here, now, and true is returned instead.
Napi::Value ReplyData(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return info.Env().Undefined();
  Napi::Env env = info.Env();
  Napi::Array buffers = info[1].As<Napi::Array>();
  uint32_t count = buffers.Length();
  std::vector<struct iovec> iov;
  std::vector<napi_ref> refs;
  iov.reserve(count);
  for (uint32_t i = 0; i < count; i++) {
    Napi::Buffer<char> buffer = buffers.Get(i).As<Napi::Buffer<char>>();
    if (buffer.Length() == 0) continue;
    // The kernel copies one huge segment markedly slower than the same bytes in 64 KiB ones
    // (measured here: 1 MiB segments halved throughput).
    for (size_t at = 0; at < buffer.Length(); at += kSegment) {
      iov.push_back({buffer.Data() + at, std::min(kSegment, buffer.Length() - at)});
    }
    if (r->wait != nullptr) {
      napi_ref ref;
      napi_create_reference(env, buffer, 1, &ref);
      refs.push_back(ref);
    }
  }
  if (r->wait == nullptr) {
    if (iov.empty()) {
      fuse_reply_buf(r->req, nullptr, 0);
    } else {
      fuse_reply_iov(r->req, iov.data(), static_cast<int>(iov.size()));
    }
    return Napi::Boolean::New(env, true);
  }
  ReadWait* wait = r->wait;
  double token = info.Length() > 2 && info[2].IsNumber() ? Num(info, 2) : 0;
  {
    std::lock_guard<std::mutex> lock(wait->mutex);
    wait->iov = std::move(iov);
    wait->refs = std::move(refs);
    wait->token = token;
  }
  wait->Finish(0);
  return Napi::Boolean::New(env, false);
}

// The arguments replyDir and replyDirPlus share: (req, size, offset, names[], inos[], modes[], …).
// Entries from index `offset` on are added while they fit in `size` bytes; each entry's offset
// cookie is its index + 1.
struct Listing {
  size_t size;
  uint32_t offset;
  Napi::Array names;
  Napi::Array inos;
  Napi::Array modes;

  explicit Listing(const Napi::CallbackInfo& info)
      : size(static_cast<size_t>(Num(info, 1))),
        offset(static_cast<uint32_t>(Num(info, 2))),
        names(info[3].As<Napi::Array>()),
        inos(info[4].As<Napi::Array>()),
        modes(info[5].As<Napi::Array>()) {}

  // Entry i's inode number and mode in `st` (the rest zero).
  void Fill(uint32_t i, struct stat* st) const {
    std::memset(st, 0, sizeof *st);
    st->st_ino = static_cast<ino_t>(inos.Get(i).As<Napi::Number>().DoubleValue());
    st->st_mode = static_cast<mode_t>(modes.Get(i).As<Napi::Number>().DoubleValue());
  }

  // add(index, name, buf, room) -> bytes the entry needs (it is added only if that fits).
  template <typename Add>
  void Reply(fuse_req_t req, Add add) const {
    std::vector<char> buf(size);
    size_t used = 0;
    for (uint32_t i = offset; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>().Utf8Value();
      size_t need = add(i, name, buf.data() + used, size - used);
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  }
};

// replyDir(req, size, offset, names[], inos[], modes[])
void ReplyDir(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return;
  Listing listing(info);
  listing.Reply(r->req, [&](uint32_t i, const std::string& name, char* buf, size_t room) {
    struct stat st;
    listing.Fill(i, &st);
    return fuse_add_direntry(r->req, buf, room, name.c_str(), &st, i + 1);
  });
}

// replyDirPlus(req, size, offset, names[], inos[], modes[], sizes[], mtimesMs[], attrTimeoutS,
// entryTimeoutS): like replyDir, each entry with its attributes, so the kernel needs no lookup
// for it. Every entry but "." and ".." (sent without attributes) is one lookup reference: the
// caller passes only entries that fit in `size` (see direntPlusSize in src/mount/fs.ts) and
// counts them as looked up. A size of -1 sends a name without attributes (no reference).
void ReplyDirPlus(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return;
  Listing listing(info);
  Napi::Array sizes = info[6].As<Napi::Array>();
  Napi::Array mtimes = info[7].As<Napi::Array>();
  double attrTimeout = Num(info, 8);
  double entryTimeout = Num(info, 9);
  listing.Reply(r->req, [&](uint32_t i, const std::string& name, char* buf, size_t room) {
    fuse_entry_param entry;
    std::memset(&entry, 0, sizeof entry);
    struct stat& st = entry.attr;
    listing.Fill(i, &st);
    FillStat(&st, sizes.Get(i).As<Napi::Number>().DoubleValue(), mtimes.Get(i).As<Napi::Number>().DoubleValue());
    bool dots = name == "." || name == "..";
    if (!dots && sizes.Get(i).As<Napi::Number>().DoubleValue() >= 0) {
      entry.ino = st.st_ino;
      entry.generation = 1;
      entry.attr_timeout = attrTimeout;
      entry.entry_timeout = entryTimeout;
    }
    return fuse_add_direntry_plus(r->req, buf, room, name.c_str(), &entry, i + 1);
  });
}

// replyStatfs(req, blockSize, blocks, blocksFree, files, nameMax)
void ReplyStatfs(const Napi::CallbackInfo& info) {
  Request* r = Claim(info);
  if (r == nullptr) return;
  struct statvfs st;
  std::memset(&st, 0, sizeof st);
  st.f_bsize = st.f_frsize = static_cast<unsigned long>(Num(info, 1));
  st.f_blocks = static_cast<fsblkcnt_t>(Num(info, 2));
  st.f_bfree = st.f_bavail = static_cast<fsblkcnt_t>(Num(info, 3));
  st.f_files = static_cast<fsfilcnt_t>(Num(info, 4));
  st.f_namemax = static_cast<unsigned long>(Num(info, 5));
  fuse_reply_statfs(r->req, &st);
}

// ---- held files (held.h): called from JavaScript ----

Session* SessionArg(const Napi::CallbackInfo& info) { return info[0].As<Napi::External<Session>>().Data(); }

// hold(session, ino, mode, size, mtimeMs, attrTimeoutS, validMs, chunks[], parentIno, name):
// the chunks are the file's whole content (copied here; the caller may reuse them at once);
// parentIno 0: not answered by name (lookup).
void Hold(const Napi::CallbackInfo& info) {
  Session* session = SessionArg(info);
  struct stat attr = MakeStat(info, 1);
  Napi::Array chunks = info[7].As<Napi::Array>();
  size_t total = 0;
  for (uint32_t i = 0; i < chunks.Length(); i++) total += chunks.Get(i).As<Napi::Buffer<char>>().Length();
  if (total != static_cast<size_t>(attr.st_size)) {
    Napi::RangeError::New(info.Env(), "hold: the chunks are not the whole file").ThrowAsJavaScriptException();
    return;
  }
  fanout::ByteVector data = session->held.Buffer(total);
  size_t at = 0;
  for (uint32_t i = 0; i < chunks.Length(); i++) {
    Napi::Buffer<char> chunk = chunks.Get(i).As<Napi::Buffer<char>>();
    std::memcpy(data.data() + at, chunk.Data(), chunk.Length());
    at += chunk.Length();
  }
  uint64_t parent = info.Length() > 9 && info[8].IsNumber() ? static_cast<uint64_t>(Num(info, 8)) : 0;
  std::string name = parent != 0 ? info[9].As<Napi::String>().Utf8Value() : std::string();
  session->held.Hold(static_cast<uint64_t>(attr.st_ino), parent, name, attr, Num(info, 5), Num(info, 6), std::move(data));
}

// drop(session, ino): the inode is forgotten (or its file changed): nothing is answered for it here.
void Drop(const Napi::CallbackInfo& info) { SessionArg(info)->held.Drop(static_cast<uint64_t>(Num(info, 1))); }

// heldStats(session) -> requests answered here, files held and evicted, bytes held.
Napi::Value HeldStats(const Napi::CallbackInfo& info) {
  Session* session = SessionArg(info);
  fanout::HeldCounters c = session->held.Counters();
  Napi::Object out = Napi::Object::New(info.Env());
  auto set = [&](const char* key, double v) { out.Set(key, Napi::Number::New(info.Env(), v)); };
  set("lookup", static_cast<double>(c.lookup));
  set("getattr", static_cast<double>(c.getattr));
  set("open", static_cast<double>(c.open));
  set("read", static_cast<double>(c.read));
  set("release", static_cast<double>(c.release));
  set("held", static_cast<double>(c.held));
  set("evicted", static_cast<double>(c.evicted));
  set("bytes", static_cast<double>(session->held.HeldBytes()));
  return out;
}

// ---- offered pages (offered.h): called from JavaScript ----

// offerFile(session, fh, fileId, size[, pageSize]): reads of handle fh (opened, not yet answered,
// or moved to a new page size) may be answered from the offered pages of file version fileId,
// counted in pageSize (default: the session's).
void OfferFile(const Napi::CallbackInfo& info) {
  uint64_t pageSize = info.Length() > 4 && info[4].IsNumber() ? static_cast<uint64_t>(Num(info, 4)) : 0;
  SessionArg(info)->offered.Open(static_cast<uint64_t>(Num(info, 1)), static_cast<uint64_t>(Num(info, 2)), static_cast<uint64_t>(Num(info, 3)), pageSize);
}

// offer(session, fileId, index, chunks[], offerId) -> offered: the chunks (page `index`, whole)
// are read from by FUSE threads until withdrawn; the caller keeps them alive until then (or
// until kReturned names offerId). False: that page is offered already.
Napi::Value Offer(const Napi::CallbackInfo& info) {
  Session* session = SessionArg(info);
  Napi::Array chunks = info[3].As<Napi::Array>();
  std::vector<struct iovec> iov;
  iov.reserve(chunks.Length());
  for (uint32_t i = 0; i < chunks.Length(); i++) {
    Napi::Buffer<char> chunk = chunks.Get(i).As<Napi::Buffer<char>>();
    if (chunk.Length() > 0) iov.push_back({chunk.Data(), chunk.Length()});
  }
  bool offered = session->offered.Offer(static_cast<uint64_t>(Num(info, 1)), static_cast<uint64_t>(Num(info, 2)), std::move(iov), Num(info, 4));
  return Napi::Boolean::New(info.Env(), offered);
}

// withdraw(session, fileId, index) -> free: true if no FUSE thread writes from the page (its
// buffers may be reused now); false if one does (kReturned names its offer id later).
Napi::Value Withdraw(const Napi::CallbackInfo& info) {
  bool free = SessionArg(info)->offered.Withdraw(static_cast<uint64_t>(Num(info, 1)), static_cast<uint64_t>(Num(info, 2)));
  return Napi::Boolean::New(info.Env(), free);
}

// offeredStats(session) -> reads answered from offered pages, reads that were not, pages offered.
Napi::Value OfferedStats(const Napi::CallbackInfo& info) {
  fanout::OfferedCounters c = SessionArg(info)->offered.Counters();
  Napi::Object out = Napi::Object::New(info.Env());
  auto set = [&](const char* key, double v) { out.Set(key, Napi::Number::New(info.Env(), v)); };
  set("served", static_cast<double>(c.served));
  set("servedBytes", static_cast<double>(c.servedBytes));
  set("missed", static_cast<double>(c.missed));
  set("offered", static_cast<double>(c.offered));
  set("pages", static_cast<double>(c.pages));
  set("bytes", static_cast<double>(c.bytes));
  return out;
}

// initInfo(session) -> what the INIT reply asked for (init.h): { done, maxPages (sent; the kernel
// grants at most fs.fuse.max_pages_limit), directIoMmap, kernelFlags }.
Napi::Value InitInfo(const Napi::CallbackInfo& info) {
  fanout::InitPatch& init = SessionArg(info)->init;
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("done", Napi::Boolean::New(info.Env(), init.done.load()));
  out.Set("maxPages", Napi::Number::New(info.Env(), init.sentMaxPages.load()));
  out.Set("directIoMmap", Napi::Boolean::New(info.Env(), init.directIoMmap.load()));
  out.Set("kernelFlags", Napi::Number::New(info.Env(), static_cast<double>(init.kernelFlags.load())));
  return out;
}

// ---- session ----

ssize_t IoRead(int fd, void* buf, size_t len, void* userdata) {
  return fanout::InitPatchRead(&static_cast<Session*>(userdata)->init, fd, buf, len);
}

ssize_t IoWritev(int fd, struct iovec* iov, int count, void* userdata) {
  return fanout::InitPatchWritev(&static_cast<Session*>(userdata)->init, fd, iov, count);
}

uint32_t OptionU32(Napi::Object options, const char* key, uint32_t fallback) {
  Napi::Value v = options.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

// mount(mountpoint, options, dispatch) -> session. options: { args: string[] (libfuse
// arguments, e.g. ["-o", "ro,max_read=1048576"]), maxRead, maxReadahead, threads, cloneFd,
// blksize, heldBytes }. dispatch(op, req, ino, ...) receives every request, then (op EXITED) the end
// of the loop.
Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsFunction()) {
    Napi::TypeError::New(env, "mount(mountpoint, options, dispatch)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string mountpoint = info[0].As<Napi::String>().Utf8Value();
  Napi::Object options = info[1].As<Napi::Object>();
  auto* session = new Session();
  session->maxRead = OptionU32(options, "maxRead", session->maxRead);
  session->maxReadahead = OptionU32(options, "maxReadahead", session->maxReadahead);
  session->threads = OptionU32(options, "threads", session->threads);
  session->cloneFd = options.Get("cloneFd").ToBoolean().Value();
  session->held.SetCapacity(OptionU32(options, "heldBytes", 16 << 20));
  session->offered.SetPageSize(OptionU32(options, "pageSize", 4 << 20));
  session->init.wantMaxPages = static_cast<uint16_t>(std::min<uint32_t>(OptionU32(options, "maxPages", 0), 65535));
  session->init.wantDirectIoMmap = options.Get("directIoMmap").ToBoolean().Value();
  g_blksize = OptionU32(options, "blksize", g_blksize);

  std::vector<std::string> args = {"fanout"};
  Napi::Value extra = options.Get("args");
  if (extra.IsArray()) {
    Napi::Array list = extra.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) args.push_back(list.Get(i).ToString().Utf8Value());
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  session->se = fuse_session_new(&fargs, &kOps, sizeof kOps, session);
  if (session->se == nullptr) {
    delete session;
    Napi::Error::New(env, "fuse_session_new failed (invalid FUSE options? libfuse printed why)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (fuse_session_mount(session->se, mountpoint.c_str()) != 0) {
    // errno as libfuse's failed open (of /dev/fuse, or the socket pair for fusermount3) left it:
    // EMFILE/ENFILE is the process out of descriptors, which the caller names as such (with the
    // limit) instead of a bug. Before, every failure here was one message, INTERNAL to the CLI.
    int cause = errno;
    fuse_session_destroy(session->se);
    delete session;
    Napi::Error error = Napi::Error::New(env, "cannot mount at " + mountpoint + " (libfuse printed why)");
    if (cause == EMFILE || cause == ENFILE) error.Set("code", Napi::String::New(env, cause == EMFILE ? "EMFILE" : "ENFILE"));
    error.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (session->init.wantMaxPages > 0 || session->init.wantDirectIoMmap) {
    // The same descriptor, read and written through init.h's hooks (libfuse keeps it open and
    // closes it as before).
    fuse_custom_io io;
    std::memset(&io, 0, sizeof io);
    io.read = IoRead;
    io.writev = IoWritev;
    if (fuse_session_custom_io(session->se, &io, fuse_session_fd(session->se)) != 0) {
      fprintf(stderr, "fanout mount: libfuse refused the custom io: 1 MiB requests, no mmap of direct I/O files\n");
    }
  }
  session->tsfn = Tsfn::New(env, info[2].As<Napi::Function>(), "fanout-fuse", 0, 1, session);
  std::thread([session] {
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, session->threads);
    fuse_loop_cfg_set_idle_threads(config, session->threads);
    fuse_loop_cfg_set_clone_fd(config, session->cloneFd ? 1 : 0);
    int status = fuse_session_loop_mt(session->se, config);
    fuse_loop_cfg_destroy(config);
    auto* call = new Call();
    call->op = kExited;
    call->count = static_cast<uint64_t>(status < 0 ? -status : status);
    session->tsfn.BlockingCall(call);
    session->tsfn.Release();
    // The session itself is left for the process to reclaim: a late reply must not touch
    // freed memory.
  }).detach();
  return Napi::External<Session>::New(env, session);
}

// unmount(session): ends the loop and detaches the mount (lazily: files still open keep it
// alive until closed). The EXITED dispatch follows when the loop has ended.
void Unmount(const Napi::CallbackInfo& info) {
  Session* session = info[0].As<Napi::External<Session>>().Data();
  bool expected = false;
  if (!session->unmounted.compare_exchange_strong(expected, true)) return;
  fuse_session_exit(session->se);
  fuse_session_unmount(session->se);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, Mount));
  exports.Set("unmount", Napi::Function::New(env, Unmount));
  exports.Set("replyError", Napi::Function::New(env, ReplyError));
  exports.Set("replyEntry", Napi::Function::New(env, ReplyEntry));
  exports.Set("replyAttr", Napi::Function::New(env, ReplyAttr));
  exports.Set("replyOpen", Napi::Function::New(env, ReplyOpen));
  exports.Set("replyData", Napi::Function::New(env, ReplyData));
  exports.Set("replyDir", Napi::Function::New(env, ReplyDir));
  exports.Set("replyDirPlus", Napi::Function::New(env, ReplyDirPlus));
  exports.Set("replyStatfs", Napi::Function::New(env, ReplyStatfs));
  exports.Set("hold", Napi::Function::New(env, Hold));
  exports.Set("drop", Napi::Function::New(env, Drop));
  exports.Set("heldStats", Napi::Function::New(env, HeldStats));
  exports.Set("offerFile", Napi::Function::New(env, OfferFile));
  exports.Set("offer", Napi::Function::New(env, Offer));
  exports.Set("withdraw", Napi::Function::New(env, Withdraw));
  exports.Set("offeredStats", Napi::Function::New(env, OfferedStats));
  // offerFile() takes a page size per handle (an addon without it offers pages of the session's only).
  exports.Set("offersPageSizes", Napi::Boolean::New(env, true));
  exports.Set("initInfo", Napi::Function::New(env, InitInfo));
  return exports;
}

}  // namespace

NODE_API_MODULE(fanout_fuse, Init)
