// dist::Comm's shared front end: argument checks, ring-model byte accounting, and
// run_ranks. Invariant: every check here depends only on arguments that all ranks
// agree on (counts, dtype, root) or on this rank's own buffers, and runs before the
// backend is entered, so a bad call fails on its rank without touching the others;
// run_ranks then turns that failure into an abort instead of a hang.
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "cuda_stream.h"
#include "strata/dist.h"
#include "strata/error.h"

namespace strata::dist {

namespace {

void check_buffer(const Comm& comm, const char* op, const char* arg, const TensorView& v,
                  Stream& stream) {
  STRATA_CHECK(v.dtype == DType::f32 || v.dtype == DType::bf16,
               "dist::" << op << ": " << arg << " is " << v.str()
                        << "; collectives take f32 or bf16 buffers");
  STRATA_CHECK(v.numel() == 0 || v.data != nullptr,
               "dist::" << op << ": " << arg << " (" << v.str() << ") has a null data pointer");
  STRATA_CHECK(v.device == nullptr || v.device == &stream.device(),
               "dist::" << op << ": " << arg << " is on " << v.device->name()
                        << " but the stream is on " << stream.device().name() << " (rank "
                        << comm.rank() << ")");
}

uint64_t ring_share(uint64_t bytes, int n) {  // (N-1)/N of bytes
  return n <= 1 ? 0 : bytes * uint64_t(n - 1) / uint64_t(n);
}

}  // namespace

Work::State::~State() = default;

void Work::wait(Stream& stream) {
  if (!state_) return;
  if (stream.device().kind() == DeviceKind::cpu && stream.role() != StreamRole::compute) {
    stream.host_function([state = state_] { state->wait(); });  // the worker's later items follow it
    return;
  }
  state_->wait_on(stream);
}
Comm::~Comm() = default;

void Comm::count_bytes(uint64_t sent, uint64_t received) {
  bytes_sent_ += sent;
  bytes_received_ += received;
}

void Comm::reset_bytes() {
  bytes_sent_ = 0;
  bytes_received_ = 0;
}

Work Comm::all_reduce_sum_async(TensorView buf, Stream& stream) {
  check_buffer(*this, "all_reduce_sum", "buf", buf, stream);
  Work w = do_all_reduce_sum(buf, stream);
  // floor(2 (N-1) B / N), not 2 floor((N-1) B / N): one rounding, as documented.
  uint64_t b = 2 * uint64_t(buf.nbytes()) * uint64_t(size_ - 1) / uint64_t(size_);
  count_bytes(b, b);
  return w;
}

Work Comm::reduce_scatter_sum_async(TensorView in, TensorView out, Stream& stream) {
  check_buffer(*this, "reduce_scatter_sum", "in", in, stream);
  check_buffer(*this, "reduce_scatter_sum", "out", out, stream);
  STRATA_CHECK(in.dtype == out.dtype, "dist::reduce_scatter_sum: in is "
                                          << in.str() << " but out is " << out.str()
                                          << "; both must have the same dtype");
  STRATA_CHECK(in.numel() % size_ == 0,
               "dist::reduce_scatter_sum: in (" << in.str() << ") has " << in.numel()
                                                << " elements, not divisible by " << size_
                                                << " ranks; pad it to a multiple of the rank count");
  STRATA_CHECK(out.numel() == in.numel() / size_,
               "dist::reduce_scatter_sum: out (" << out.str() << ") has " << out.numel()
                                                 << " elements; it must hold one shard of in ("
                                                 << in.numel() << " / " << size_
                                                 << " ranks = " << in.numel() / size_ << ")");
  Work w = do_reduce_scatter_sum(in, out, stream);
  uint64_t b = ring_share(in.nbytes(), size_);
  count_bytes(b, b);
  return w;
}

Work Comm::all_gather_async(TensorView in, TensorView out, Stream& stream) {
  check_buffer(*this, "all_gather", "in", in, stream);
  check_buffer(*this, "all_gather", "out", out, stream);
  STRATA_CHECK(in.dtype == out.dtype, "dist::all_gather: in is " << in.str() << " but out is "
                                                                 << out.str()
                                                                 << "; both must have the same dtype");
  STRATA_CHECK(out.numel() % size_ == 0,
               "dist::all_gather: out (" << out.str() << ") has " << out.numel()
                                         << " elements, not divisible by " << size_
                                         << " ranks; pad it to a multiple of the rank count");
  STRATA_CHECK(out.numel() == in.numel() * size_,
               "dist::all_gather: in (" << in.str() << ") has " << in.numel() << " elements, out ("
                                        << out.str() << ") has " << out.numel() << "; out must hold "
                                        << size_ << " ranks x " << in.numel() << " elements");
  Work w = do_all_gather(in, out, stream);
  uint64_t b = ring_share(out.nbytes(), size_);
  count_bytes(b, b);
  return w;
}

Work Comm::broadcast_async(TensorView buf, int root, Stream& stream) {
  check_buffer(*this, "broadcast", "buf", buf, stream);
  STRATA_CHECK(root >= 0 && root < size_, "dist::broadcast: root " << root << " is not a rank of a "
                                                                   << size_ << "-rank communicator");
  Work w = do_broadcast(buf, root, stream);
  if (size_ > 1) {
    uint64_t b = buf.nbytes();
    bool last = rank_ == (root + size_ - 1) % size_;  // end of the pipeline: sends nothing
    count_bytes(last ? 0 : b, rank_ == root ? 0 : b);
  }
  return w;
}

void Comm::all_reduce_sum(TensorView buf, Stream& stream) {
  Work w = all_reduce_sum_async(buf, stream);
  complete(w, stream);
}

void Comm::reduce_scatter_sum(TensorView in, TensorView out, Stream& stream) {
  Work w = reduce_scatter_sum_async(in, out, stream);
  complete(w, stream);
}

void Comm::all_gather(TensorView in, TensorView out, Stream& stream) {
  Work w = all_gather_async(in, out, stream);
  complete(w, stream);
}

void Comm::broadcast(TensorView buf, int root, Stream& stream) {
  Work w = broadcast_async(buf, root, stream);
  complete(w, stream);
}

void Comm::barrier(Stream& stream) {
  Work w = do_barrier(stream);
  complete(w, stream);
}

// ---- run_ranks

void run_ranks(std::vector<std::unique_ptr<Comm>>& comms,
               const std::function<void(int rank, Comm& comm)>& fn) {
  int n = int(comms.size());
  STRATA_CHECK(n >= 1, "dist::run_ranks: no communicators given");
  for (int r = 0; r < n; ++r)
    STRATA_CHECK(comms[r] && comms[r]->rank() == r && comms[r]->size() == n,
                 "dist::run_ranks: comms[" << r << "] is not rank " << r << " of " << n);
  std::mutex mutex;
  std::string first_error;  // "rank R failed: ..." of the first rank that threw
  auto fail = [&](int rank, const std::string& what) {
    std::string reason = "rank " + std::to_string(rank) + " failed: " + what;
    {
      std::lock_guard lock(mutex);
      if (first_error.empty()) first_error = reason;
    }
    for (auto& c : comms) c->abort(reason);  // abort keeps the first reason it was given
  };
  std::vector<std::thread> threads;
  threads.reserve(size_t(n));
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, *comms[r]);
        comms[r]->finish();
      } catch (const std::exception& e) {
        fail(r, e.what());
      } catch (...) {
        fail(r, "unknown exception");
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!first_error.empty()) throw Error(first_error);
}

void run_ranks(int n, const std::function<void(int rank, Comm& comm)>& fn) {
  auto comms = make_cpu_comms(n);
  run_ranks(comms, fn);
}

// ---- the CUDA seam (cuda_stream.h)

namespace detail {
namespace {
std::atomic<NativeStreamAccessor> g_native_stream{nullptr};
}
void set_native_stream_accessor(NativeStreamAccessor accessor) { g_native_stream.store(accessor); }
void* native_stream(Stream& stream) {
  NativeStreamAccessor f = g_native_stream.load();
  return f ? f(stream) : nullptr;
}
bool has_native_stream_accessor() { return g_native_stream.load() != nullptr; }
}  // namespace detail

// ---- builds without NCCL: the entry points exist and say why they cannot work

#if !defined(STRATA_WITH_NCCL)
namespace {
[[noreturn]] void no_nccl(const char* fn) {
  STRATA_FAIL("dist::" << fn << ": strata was built without NCCL (CUDA backend "
                       << (built_with_cuda() ? "on, NCCL not found" : "off")
                       << "); rebuild with CUDA and NCCL, or use make_cpu_comms");
}
}  // namespace
std::vector<std::unique_ptr<Comm>> make_nccl_comms(const std::vector<int>&) {
  no_nccl("make_nccl_comms");
}
void nccl_unique_id_to_file(const std::string&) { no_nccl("nccl_unique_id_to_file"); }
std::unique_ptr<Comm> make_nccl_comm_from_file(const std::string&, int, int, int, double) {
  no_nccl("make_nccl_comm_from_file");
}
std::vector<std::unique_ptr<Comm>> make_nccl_comms_from_file(const std::string&, int, int,
                                                             const std::vector<int>&, double) {
  no_nccl("make_nccl_comms_from_file");
}
#endif

}  // namespace strata::dist
