// Communicators: collectives between ranks (one rank = one device = one host thread).
// Invariant: every rank of a communicator calls the same collectives, in the same
// order, with the same element counts and dtype; a collective's result does not
// depend on thread timing (the CPU backend sums ranks 0..N-1 in that order for every
// element, so results are bitwise reproducible run to run).
//
// Ordering: each collective takes the Stream to order on. The plain forms complete on
// CPU before returning; on NCCL they are enqueued on the stream's cudaStream_t and
// return at once: the buffers may be reused only by work ordered after it on that
// stream (or after an event recorded there). The *_async forms return a Work at once
// on both: the buffers belong to the collective until work.wait() returns (or
// work.test() is true, or, for work on one stream, after work.wait(stream)); on NCCL
// the caller's stream does not wait for an async collective until work.wait(stream). The CPU backend runs a rank's collectives one after another on
// that rank's progress thread, in the order they were issued. No CUDA or NCCL header
// is included here.
//
// Byte accounting (per communicator, what a ring algorithm moves for this rank, with
// N ranks and B the full buffer size in bytes):
//   all_reduce_sum      sent = received = floor(2 (N-1) B / N)
//   reduce_scatter_sum  sent = received = (N-1) B / N   (B = input, n*N elements)
//   all_gather          sent = received = (N-1) B / N   (B = output, n*N elements)
//   broadcast           pipeline root -> root+1 -> ... : every rank but root receives
//                       B, every rank but root-1 (mod N) sends B
//   barrier             0
// With one rank every collective moves 0 bytes.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "tensor.h"

namespace strata::dist {

// Completion of an asynchronous collective. wait() blocks the calling thread until the
// collective is done (NCCL: until the stream has run it) and rethrows its error (a
// mismatch between ranks, an abort); test() is true once it is done, successfully or
// not, without blocking. A default Work is done. Copies share one completion.
// wait(stream) orders instead of blocking where it can: on NCCL the Work carries the
// event recorded on the communication stream after the collective, and the stream's
// later work waits for it (the host goes on); on a CPU device's worker stream an item
// queued there waits for it (its error is rethrown by that stream's synchronize);
// on a CPU compute stream (the caller) it blocks like wait(). Call it where the
// result is first used: until then the collective overlaps the caller's work.
class Work {
 public:
  class State {
   public:
    virtual ~State();
    virtual void wait() = 0;
    virtual bool test() = 0;
    // Default: blocks (wait()).
    virtual void wait_on(Stream& stream) {
      (void)stream;
      wait();
    }
  };
  Work() = default;
  explicit Work(std::shared_ptr<State> state) : state_(std::move(state)) {}
  void wait() {
    if (state_) state_->wait();
  }
  void wait(Stream& stream);
  bool test() { return !state_ || state_->test(); }

 private:
  std::shared_ptr<State> state_;
};

class Comm {
 public:
  virtual ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual const char* backend() const = 0;  // "cpu" or "nccl"

  // Buffers are contiguous f32 or bf16; their shape is ignored (flat element count).
  // bf16 sums are accumulated in f32 and rounded once on CPU (NCCL rounds per step).

  // buf (n) in place: every rank ends with the elementwise sum over ranks.
  void all_reduce_sum(TensorView buf, Stream& stream);
  // in (n*N) -> out (n): out = shard `rank` of the sum, elements [rank*n, (rank+1)*n).
  // in and out may alias only as out == in + rank*n (in place).
  void reduce_scatter_sum(TensorView in, TensorView out, Stream& stream);
  // in (n) -> out (n*N), rank-major: out[r*n, (r+1)*n) = rank r's in.
  // in and out may alias only as in == out + rank*n (in place).
  void all_gather(TensorView in, TensorView out, Stream& stream);
  // buf (n) in place: every rank ends with root's buf.
  void broadcast(TensorView buf, int root, Stream& stream);
  // CPU: no rank returns before all have entered. NCCL: stream-ordered (a 1-element
  // all-reduce), it does not block the host.
  void barrier(Stream& stream);

  // The same collectives, asynchronous: checked and counted here, then started; the
  // buffers are the collective's until the Work completes. Issue order is the
  // collective order every rank must agree on.
  Work all_reduce_sum_async(TensorView buf, Stream& stream);
  Work reduce_scatter_sum_async(TensorView in, TensorView out, Stream& stream);
  Work all_gather_async(TensorView in, TensorView out, Stream& stream);
  Work broadcast_async(TensorView buf, int root, Stream& stream);

  // Ring-model bytes moved by this rank since construction or reset_bytes().
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  void reset_bytes();

  // Thread-safe. Makes every rank blocked in, or later entering, a collective throw
  // strata::Error(reason). The first reason wins; a communicator stays aborted.
  virtual void abort(const std::string& reason) = 0;
  virtual bool aborted() const = 0;
  // This rank will call no more collectives. The CPU backend first lets the ones it
  // issued complete; then, since a rank that returns while others wait in a
  // collective would hang them, it aborts those instead.
  virtual void finish() {}

 protected:
  Comm(int rank, int size) : rank_(rank), size_(size) {}
  // Arguments are checked (dtype, counts, devices) before these are called. Each
  // starts the collective and returns its completion.
  virtual Work do_all_reduce_sum(TensorView buf, Stream& stream) = 0;
  virtual Work do_reduce_scatter_sum(TensorView in, TensorView out, Stream& stream) = 0;
  virtual Work do_all_gather(TensorView in, TensorView out, Stream& stream) = 0;
  virtual Work do_broadcast(TensorView buf, int root, Stream& stream) = 0;
  virtual Work do_barrier(Stream& stream) = 0;
  // true: the plain forms are complete once enqueued on the stream (NCCL); false: the
  // plain forms wait for the Work (CPU).
  virtual bool stream_ordered() const { return false; }

 private:
  void count_bytes(uint64_t sent, uint64_t received);
  void complete(Work& work, Stream& stream) {
    if (stream_ordered())
      work.wait(stream);  // the caller's later work sees the result
    else
      work.wait();
  }
  int rank_;
  int size_;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
};

// n ranks that are threads of this process, sharing memory.
std::vector<std::unique_ptr<Comm>> make_cpu_comms(int n);

// Runs fn(rank, *comms[rank]) on one thread per rank and joins them. If any rank
// throws, every communicator is aborted with "rank R failed: <message>" (so ranks
// blocked in a collective throw too instead of hanging), all threads are joined, and
// that error is rethrown here as strata::Error.
void run_ranks(std::vector<std::unique_ptr<Comm>>& comms,
               const std::function<void(int rank, Comm& comm)>& fn);
// Same, on n fresh CPU communicators.
void run_ranks(int n, const std::function<void(int rank, Comm& comm)>& fn);

// ---- NCCL (builds with CUDA and NCCL; otherwise these throw strata::Error)

// One process, several GPUs: comms[i] drives devices[i] (ncclCommInitAll).
std::vector<std::unique_ptr<Comm>> make_nccl_comms(const std::vector<int>& devices);
// Several processes (one per node): one process writes a fresh NCCL unique id to
// `path` on a shared filesystem (atomically: temp file + rename); every process then
// joins with the id, waiting up to timeout_s for the file to appear. Use a path no
// earlier job left behind (e.g. one that names the job id): a stale id hangs.
void nccl_unique_id_to_file(const std::string& path);
// One rank in this process.
std::unique_ptr<Comm> make_nccl_comm_from_file(const std::string& path, int rank, int nranks,
                                               int device, double timeout_s = 300.0);
// Several ranks in this process (one per local GPU): ranks first_rank + i drive
// devices[i], initialised together (ncclGroupStart / ncclCommInitRank / ncclGroupEnd).
std::vector<std::unique_ptr<Comm>> make_nccl_comms_from_file(const std::string& path,
                                                             int first_rank, int nranks,
                                                             const std::vector<int>& devices,
                                                             double timeout_s = 300.0);

}  // namespace strata::dist
