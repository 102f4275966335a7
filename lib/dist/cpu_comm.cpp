// Shared-memory collectives between ranks that are threads of one process.
// Invariants:
// - Every element of a sum is ((x_0 + x_1) + x_2) + ... + x_{N-1} in f32, ranks in
//   order, whatever the thread timing and whichever rank computes it; bf16 is
//   rounded once at the end. Results are therefore bitwise reproducible.
// - A collective is: publish my slot, barrier, do my share reading peers' buffers,
//   barrier. No rank writes memory another rank reads during the same phase, and no
//   rank returns (and reuses its buffers) before all have finished reading them.
// - The barrier is abortable: std::barrier cannot be woken with an error.
// - Each rank's collectives run on that rank's progress thread, one at a time, in the
//   order the rank issued them (so every rank meets the others in the same order); the
//   caller gets a Work and the plain forms wait for it. Only the progress thread
//   touches the rank's slot.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/convert.h"
#include "strata/dist.h"
#include "strata/error.h"

namespace strata::dist {

namespace {

constexpr int kMaxRanks = 256;  // per-collective pointer tables live on the stack

enum class Op : uint8_t { all_reduce_sum, reduce_scatter_sum, all_gather, broadcast, barrier };

const char* op_name(Op op) {
  switch (op) {
    case Op::all_reduce_sum: return "all_reduce_sum";
    case Op::reduce_scatter_sum: return "reduce_scatter_sum";
    case Op::all_gather: return "all_gather";
    case Op::broadcast: return "broadcast";
    case Op::barrier: return "barrier";
  }
  return "?";
}

// What one rank asked for in the current collective. Written by its owner before
// the first barrier, read by everyone between the two barriers.
struct Slot {
  Op op = Op::barrier;
  DType dtype = DType::f32;
  int64_t count = 0;  // per-rank input elements: agreed by all ranks
  int root = 0;
  const void* in = nullptr;
  void* out = nullptr;
};

class CpuGroup {
 public:
  explicit CpuGroup(int n) : n_(n), slots_(size_t(n)) {}

  Slot& slot(int rank) { return slots_[size_t(rank)]; }

  // Returns when all n ranks have arrived; throws the abort reason if the group is
  // (or becomes, while waiting) aborted.
  void arrive_and_wait() {
    std::unique_lock lock(mutex_);
    if (aborted_) throw Error(reason_);
    if (finished_rank_ >= 0) {
      abort_locked(returned_message(finished_rank_));
      throw Error(reason_);
    }
    if (++waiting_ == n_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    uint64_t generation = generation_;
    cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
    // A barrier that completed before the abort still counts; the next one throws.
    if (generation_ == generation) throw Error(reason_);
  }

  void abort(const std::string& reason) {
    std::lock_guard lock(mutex_);
    abort_locked(reason);
  }

  bool aborted() const {
    std::lock_guard lock(mutex_);
    return aborted_;
  }

  // Rank `rank` will not call again: anyone waiting now, or later, would hang.
  void finish(int rank) {
    std::lock_guard lock(mutex_);
    if (finished_rank_ < 0) finished_rank_ = rank;
    if (waiting_ > 0) abort_locked(returned_message(rank));
  }

 private:
  static std::string returned_message(int rank) {
    return "rank " + std::to_string(rank) +
           " returned while other ranks wait in a collective; every rank must call the same "
           "collectives in the same order";
  }

  void abort_locked(const std::string& reason) {
    if (aborted_) return;
    aborted_ = true;
    reason_ = reason;
    cv_.notify_all();
  }

  const int n_;
  std::vector<Slot> slots_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int waiting_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::string reason_;
  int finished_rank_ = -1;
};

// dst_d[i] = sum_k src_k[i] for every d, k in order 0..nsrc-1, accumulated in f32.
// The whole block is read before any of it is written, so dst may alias a src.
template <class T>
void reduce_block_range(const T* const* srcs, int nsrc, T* const* dsts, int ndst, int64_t count) {
  constexpr int64_t kBlock = 2048;
  alignas(64) float acc[kBlock];
  for (int64_t b = 0; b < count; b += kBlock) {
    int64_t m = std::min(kBlock, count - b);
    const T* __restrict s0 = srcs[0] + b;
    for (int64_t i = 0; i < m; ++i) acc[i] = num::load(s0[i]);
    for (int k = 1; k < nsrc; ++k) {
      const T* __restrict sk = srcs[k] + b;
      for (int64_t i = 0; i < m; ++i) acc[i] += num::load(sk[i]);
    }
    for (int d = 0; d < ndst; ++d) {
      T* __restrict dk = dsts[d] + b;
      for (int64_t i = 0; i < m; ++i) dk[i] = num::store<T>(acc[i]);
    }
  }
}

template <class T>
void reduce_typed(const void* const* srcs, int nsrc, void* const* dsts, int ndst, int64_t offset,
                  int64_t count) {
  const T* s[kMaxRanks];
  T* d[kMaxRanks];
  for (int k = 0; k < nsrc; ++k) s[k] = static_cast<const T*>(srcs[k]) + offset;
  for (int k = 0; k < ndst; ++k) d[k] = static_cast<T*>(dsts[k]) + offset;
  reduce_block_range<T>(s, nsrc, d, ndst, count);
}

void reduce(DType dtype, const void* const* srcs, int nsrc, void* const* dsts, int ndst,
            int64_t offset, int64_t count) {
  if (count <= 0) return;
  if (dtype == DType::bf16)
    reduce_typed<num::bf16>(srcs, nsrc, dsts, ndst, offset, count);
  else
    reduce_typed<float>(srcs, nsrc, dsts, ndst, offset, count);
}

// Rank r's share of [0, count): boundaries on 64-byte multiples so ranks do not
// write the same cache line.
std::pair<int64_t, int64_t> chunk(int64_t count, int n, int r, DType dtype) {
  int64_t align = 64 / int64_t(dtype_size(dtype));
  int64_t units = (count + align - 1) / align;
  int64_t lo = std::min(count, units * r / n * align);
  int64_t hi = std::min(count, units * (r + 1) / n * align);
  return {lo, hi};
}

// Done once the progress thread has run the collective; holds its error, if any.
class CpuWork final : public Work::State {
 public:
  void wait() override {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_; });
    if (error_) std::rethrow_exception(error_);
  }
  bool test() override {
    std::lock_guard lock(mutex_);
    return done_;
  }
  void set_done(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
      error_ = std::move(error);
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

// One thread running a rank's collectives in issue order; started by the first one.
class ProgressThread {
 public:
  ~ProgressThread() { stop(); }

  Work run(std::function<void()> job) {
    auto work = std::make_shared<CpuWork>();
    {
      std::lock_guard lock(mutex_);
      if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
      queue_.push_back({std::move(job), work});
    }
    cv_.notify_all();
    return Work(work);
  }

  // Waits until every collective issued so far has run (or failed).
  void drain() {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return queue_.empty() && !busy_; });
  }

  bool idle() {
    std::lock_guard lock(mutex_);
    return queue_.empty() && !busy_;
  }

  // Runs what is queued (an aborted group makes it fail fast), then joins.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Job {
    std::function<void()> fn;
    std::shared_ptr<CpuWork> work;
  };

  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      Job job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      std::exception_ptr error;
      try {
        job.fn();
      } catch (...) {
        error = std::current_exception();
      }
      job.work->set_done(error);
      lock.lock();
      busy_ = false;
      if (queue_.empty()) idle_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_, idle_;
  std::deque<Job> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

class CpuComm final : public Comm {
 public:
  CpuComm(int rank, int size, std::shared_ptr<CpuGroup> group)
      : Comm(rank, size), group_(std::move(group)) {}
  ~CpuComm() override {
    // Peers will not meet collectives still queued here: fail them instead of hanging.
    if (!progress_.idle()) group_->abort("rank " + std::to_string(rank()) +
                                         "'s communicator was destroyed with collectives in flight");
    progress_.stop();
  }

  const char* backend() const override { return "cpu"; }
  void abort(const std::string& reason) override { group_->abort(reason); }
  bool aborted() const override { return group_->aborted(); }
  void finish() override {
    progress_.drain();  // what this rank issued completes (or is aborted) first
    group_->finish(rank());
  }

 protected:
  Work do_all_reduce_sum(TensorView buf, Stream& stream) override {
    return start("all_reduce_sum", stream, [this, buf] { all_reduce_sum_now(buf); });
  }
  Work do_reduce_scatter_sum(TensorView in, TensorView out, Stream& stream) override {
    return start("reduce_scatter_sum", stream, [this, in, out] { reduce_scatter_sum_now(in, out); });
  }
  Work do_all_gather(TensorView in, TensorView out, Stream& stream) override {
    return start("all_gather", stream, [this, in, out] { all_gather_now(in, out); });
  }
  Work do_broadcast(TensorView buf, int root, Stream& stream) override {
    return start("broadcast", stream, [this, buf, root] { broadcast_now(buf, root); });
  }
  Work do_barrier(Stream& stream) override {
    return start("barrier", stream, [this] {
      publish(Op::barrier, TensorView(), nullptr, nullptr, 0);
      group_->arrive_and_wait();
    });
  }

 private:
  // The caller's stream has written the buffers before the progress thread reads them:
  // the job waits for an event recorded there (the caller does not block).
  Work start(const char* op, Stream& stream, std::function<void()> job) {
    // Ranks read each other's buffers in place: host-addressable memory only (CPU
    // devices, the emulated CUDA device).
    STRATA_CHECK(stream.device().host_addressable(),
                 "dist::" << op << ": a cpu communicator was given a stream on " << stream.device().name()
                          << ", whose memory the host cannot address; use make_nccl_comms for GPUs");
    auto written = std::make_shared<Event>(stream.device());
    written->record(stream);
    return progress_.run([written, job = std::move(job)] {
      written->synchronize();
      job();
    });
  }

  void all_reduce_sum_now(const TensorView& buf) {
    int n = size();
    Slot& me = publish(Op::all_reduce_sum, buf, buf.data, buf.data, 0);
    auto [lo, hi] = chunk(me.count, n, rank(), me.dtype);
    const void* srcs[kMaxRanks];
    void* dsts[kMaxRanks];
    for (int k = 0; k < n; ++k) {
      srcs[k] = group_->slot(k).in;
      dsts[k] = group_->slot(k).out;
    }
    reduce(me.dtype, srcs, n, dsts, n, lo, hi - lo);
    group_->arrive_and_wait();
  }

  void reduce_scatter_sum_now(const TensorView& in, const TensorView& out) {
    int n = size();
    Slot& me = publish(Op::reduce_scatter_sum, in, in.data, out.data, 0);
    int64_t shard = me.count / n;
    size_t elt = dtype_size(me.dtype);
    const void* srcs[kMaxRanks];
    for (int k = 0; k < n; ++k)
      srcs[k] = static_cast<const char*>(group_->slot(k).in) + size_t(rank() * shard) * elt;
    void* dst = out.data;
    reduce(me.dtype, srcs, n, &dst, 1, 0, shard);
    group_->arrive_and_wait();
  }

  void all_gather_now(const TensorView& in, const TensorView& out) {
    int n = size();
    Slot& me = publish(Op::all_gather, in, in.data, out.data, 0);
    size_t bytes = size_t(me.count) * dtype_size(me.dtype);
    for (int k = 0; k < n; ++k) {
      char* dst = static_cast<char*>(out.data) + size_t(k) * bytes;
      const void* src = group_->slot(k).in;
      if (dst != src && bytes) std::memcpy(dst, src, bytes);  // dst == src: in place
    }
    group_->arrive_and_wait();
  }

  void broadcast_now(const TensorView& buf, int root) {
    Slot& me = publish(Op::broadcast, buf, buf.data, buf.data, root);
    size_t bytes = size_t(me.count) * dtype_size(me.dtype);
    if (rank() != root && bytes) std::memcpy(buf.data, group_->slot(root).in, bytes);
    group_->arrive_and_wait();
  }

  // Fills this rank's slot, waits for all ranks, and checks that they all asked for
  // the same collective. Every rank sees the same slots, so on a mismatch every rank
  // throws the same error and none is left waiting.
  Slot& publish(Op op, const TensorView& v, const void* in, void* out, int root) {
    Slot& me = group_->slot(rank());
    me.op = op;
    me.dtype = v.dtype;
    me.count = v.numel();
    me.root = root;
    me.in = in;
    me.out = out;
    group_->arrive_and_wait();
    const Slot& first = group_->slot(0);  // compared with rank 0's, so all agree
    for (int k = 1; k < size(); ++k) {
      const Slot& other = group_->slot(k);
      if (other.op != first.op || other.dtype != first.dtype || other.count != first.count ||
          other.root != first.root) {
        std::ostringstream s;
        s << "dist: ranks disagree on the collective: rank 0 calls " << describe(first)
          << ", rank " << k << " calls " << describe(other)
          << "; every rank must call the same collectives in the same order";
        throw Error(s.str());
      }
    }
    return me;
  }

  static std::string describe(const Slot& s) {
    std::ostringstream o;
    o << op_name(s.op);
    if (s.op != Op::barrier) o << "(" << dtype_name(s.dtype) << ", " << s.count << " elements";
    if (s.op == Op::broadcast) o << ", root " << s.root;
    if (s.op != Op::barrier) o << ")";
    return o.str();
  }

  std::shared_ptr<CpuGroup> group_;
  ProgressThread progress_;  // last member: stopped before the rest is destroyed
};

}  // namespace

std::vector<std::unique_ptr<Comm>> make_cpu_comms(int n) {
  STRATA_CHECK(n >= 1 && n <= kMaxRanks,
               "dist::make_cpu_comms: " << n << " ranks requested; a CPU group has 1 to " << kMaxRanks);
  auto group = std::make_shared<CpuGroup>(n);
  std::vector<std::unique_ptr<Comm>> comms;
  comms.reserve(size_t(n));
  for (int r = 0; r < n; ++r) comms.push_back(std::make_unique<CpuComm>(r, n, group));
  return comms;
}

}  // namespace strata::dist
