// NCCL communicators (built only with CUDA and NCCL). Collectives run on the CUDA
// device's communication stream, ordered against the strata::Stream given (usually
// compute; its cudaStream_t comes through cuda_stream.h) by events: the comm stream
// waits for what the caller enqueued before; the Work carries an event recorded on
// the comm stream after the collective, and a consumer's stream waits for it only
// where the result is used (Work::wait(stream); the plain forms at once), so an async
// collective overlaps the caller's compute. The host never blocks.
// Invariants:
// - Every NCCL and CUDA call goes through a check macro that records the expression,
//   the library's error string and file:line.
// - A communicator's NCCL handle is used under mutex_, so abort() from another
//   thread (run_ranks) can ncclCommAbort it safely; ranks stuck waiting on a peer's
//   kernel are then released by NCCL, and later calls throw the abort reason.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <mutex>
#include <string>

#include "../bootstrap_file.h"
#include "../cuda_stream.h"
#include "cuda/runtime.h"
#include "strata/dist.h"
#include "strata/error.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#error "strata needs NCCL 2.10 or newer (ncclBfloat16)"
#endif

#define STRATA_NCCL_CHECK(expr)                                                               \
  do {                                                                                        \
    ncclResult_t strata_nccl_result_ = (expr);                                                \
    if (strata_nccl_result_ != ncclSuccess)                                                   \
      ::strata::detail::throw_call_error(#expr, ncclGetErrorString(strata_nccl_result_),      \
                                         __FILE__, __LINE__);                                 \
  } while (0)

#define STRATA_DIST_CUDA_CHECK(expr)                                                          \
  do {                                                                                        \
    cudaError_t strata_cuda_result_ = (expr);                                                 \
    if (strata_cuda_result_ != cudaSuccess)                                                   \
      ::strata::detail::throw_call_error(#expr, cudaGetErrorString(strata_cuda_result_),      \
                                         __FILE__, __LINE__);                                 \
  } while (0)

namespace strata::dist {

namespace {

ncclDataType_t nccl_dtype(DType t) { return t == DType::bf16 ? ncclBfloat16 : ncclFloat32; }

void check_devices(const char* fn, const std::vector<int>& devices) {
  int count = 0;
  STRATA_DIST_CUDA_CHECK(cudaGetDeviceCount(&count));
  STRATA_CHECK(!devices.empty(), "dist::" << fn << ": no devices given");
  for (size_t i = 0; i < devices.size(); ++i) {
    STRATA_CHECK(devices[i] >= 0 && devices[i] < count,
                 "dist::" << fn << ": device " << devices[i] << " does not exist (" << count
                          << " CUDA devices visible)");
    for (size_t j = 0; j < i; ++j)
      STRATA_CHECK(devices[i] != devices[j],
                   "dist::" << fn << ": device " << devices[i] << " listed twice");
  }
}

// Done when the stream has run everything enqueued before the event was recorded.
class NcclWork final : public Work::State {
 public:
  NcclWork(cudaStream_t stream, int device) : device_(device) {
    STRATA_DIST_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    STRATA_DIST_CUDA_CHECK(cudaEventRecord(event_, stream));
  }
  ~NcclWork() override {
    if (event_) STRATA_CHECK_PRINT(cudaEventDestroy(event_) == cudaSuccess, "cudaEventDestroy");
  }
  void wait() override {
    STRATA_DIST_CUDA_CHECK(cudaSetDevice(device_));
    STRATA_DIST_CUDA_CHECK(cudaEventSynchronize(event_));
  }
  // The stream waits for the event (no host block); a CPU stream's caller blocks.
  void wait_on(Stream& stream) override {
    void* native = detail::native_stream(stream);
    if (!native) return wait();
    STRATA_DIST_CUDA_CHECK(cudaSetDevice(device_));
    STRATA_DIST_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(native), event_, 0));
  }
  bool test() override {
    const cudaError_t e = cudaEventQuery(event_);
    if (e == cudaErrorNotReady) return false;
    STRATA_DIST_CUDA_CHECK(e);
    return true;
  }

 private:
  cudaEvent_t event_ = nullptr;
  int device_;
};

class NcclComm final : public Comm {
 public:
  NcclComm(ncclComm_t comm, int rank, int size, int device)
      : Comm(rank, size), comm_(comm), device_(device) {
    STRATA_DIST_CUDA_CHECK(cudaSetDevice(device_));
    STRATA_DIST_CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(float)));
    STRATA_DIST_CUDA_CHECK(cudaMemset(barrier_word_, 0, sizeof(float)));
    STRATA_DIST_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  }

  ~NcclComm() override {
    std::lock_guard lock(mutex_);
    if (comm_) STRATA_CHECK_PRINT(ncclCommDestroy(comm_) == ncclSuccess, "ncclCommDestroy");
    if (barrier_word_) STRATA_CHECK_PRINT(cudaFree(barrier_word_) == cudaSuccess, "cudaFree");
    if (ready_) STRATA_CHECK_PRINT(cudaEventDestroy(ready_) == cudaSuccess, "cudaEventDestroy");
  }

  const char* backend() const override { return "nccl"; }

  void abort(const std::string& reason) override {
    std::lock_guard lock(mutex_);
    if (aborted_) return;
    aborted_ = true;
    reason_ = reason;
    if (comm_) STRATA_CHECK_PRINT(ncclCommAbort(comm_) == ncclSuccess, "ncclCommAbort");
    comm_ = nullptr;
  }

  bool aborted() const override {
    std::lock_guard lock(mutex_);
    return aborted_;
  }

 protected:
  bool stream_ordered() const override { return true; }

  Work do_all_reduce_sum(TensorView buf, Stream& stream) override {
    return enqueue("all_reduce_sum", stream, [&](cudaStream_t s) {
      STRATA_NCCL_CHECK(ncclAllReduce(buf.data, buf.data, size_t(buf.numel()), nccl_dtype(buf.dtype), ncclSum,
                                      comm_, s));
    });
  }

  Work do_reduce_scatter_sum(TensorView in, TensorView out, Stream& stream) override {
    return enqueue("reduce_scatter_sum", stream, [&](cudaStream_t s) {
      STRATA_NCCL_CHECK(ncclReduceScatter(in.data, out.data, size_t(out.numel()), nccl_dtype(in.dtype), ncclSum,
                                          comm_, s));
    });
  }

  Work do_all_gather(TensorView in, TensorView out, Stream& stream) override {
    return enqueue("all_gather", stream, [&](cudaStream_t s) {
      STRATA_NCCL_CHECK(ncclAllGather(in.data, out.data, size_t(in.numel()), nccl_dtype(in.dtype), comm_, s));
    });
  }

  Work do_broadcast(TensorView buf, int root, Stream& stream) override {
    return enqueue("broadcast", stream, [&](cudaStream_t s) {
      STRATA_NCCL_CHECK(ncclBroadcast(buf.data, buf.data, size_t(buf.numel()), nccl_dtype(buf.dtype), root, comm_, s));
    });
  }

  Work do_barrier(Stream& stream) override {
    return enqueue("barrier", stream, [&](cudaStream_t s) {
      STRATA_NCCL_CHECK(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclFloat32, ncclSum, comm_, s));
    });
  }

 private:
  // Under mutex_: fails if aborted or if the stream is not this GPU's; returns the
  // cudaStream_t to enqueue on, with this rank's device current.
  cudaStream_t enter(const char* op, Stream& stream) {
    if (aborted_) throw Error(reason_);
    Device& dev = stream.device();
    STRATA_CHECK(dev.kind() == DeviceKind::cuda && dev.index() == device_,
                 "dist::" << op << ": the nccl communicator of rank " << rank() << " drives cuda:"
                          << device_ << " but was given a stream on " << dev.name());
    void* native = detail::native_stream(stream);
    STRATA_CHECK(native != nullptr,
                 "dist::" << op << ": no cudaStream_t for the stream on " << dev.name()
                          << (detail::has_native_stream_accessor()
                                  ? ""
                                  : " (the CUDA backend has not registered "
                                    "dist::detail::set_native_stream_accessor)"));
    STRATA_DIST_CUDA_CHECK(cudaSetDevice(device_));
    return static_cast<cudaStream_t>(native);
  }

  // Runs `collective` (NCCL calls on a cudaStream_t) on the device's communication
  // stream, ordered after the caller's stream. The caller's stream does not wait for
  // it here: the Work's event is recorded on the comm stream after it, and the
  // consumer waits for that event where it uses the result (Work::wait(stream); the
  // plain forms do so at once). ready_ is reused: a wait captures the latest record,
  // and mutex_ keeps record and wait of one collective together.
  template <class F>
  Work enqueue(const char* op, Stream& stream, F&& collective) {
    std::lock_guard lock(mutex_);
    cudaStream_t caller = enter(op, stream);
    auto* state = static_cast<cuda_runtime::DeviceState*>(stream.device().backend());
    auto comm = static_cast<cudaStream_t>(cuda_runtime::stream(state, cuda_runtime::StreamRole::communication));
    if (comm == caller) {
      collective(caller);
      return completion(caller);
    }
    STRATA_DIST_CUDA_CHECK(cudaEventRecord(ready_, caller));
    STRATA_DIST_CUDA_CHECK(cudaStreamWaitEvent(comm, ready_, 0));
    collective(comm);
    return completion(comm);
  }
  Work completion(cudaStream_t s) { return Work(std::make_shared<NcclWork>(s, device_)); }


  mutable std::mutex mutex_;
  ncclComm_t comm_;
  int device_;
  float* barrier_word_ = nullptr;  // (1) device scratch of the stream-ordered barrier
  cudaEvent_t ready_ = nullptr;    // recorded on the caller's stream, waited on by comm
  bool aborted_ = false;
  std::string reason_;
};

ncclUniqueId read_unique_id(const std::string& path, double timeout_s) {
  ncclUniqueId id;
  auto bytes = detail::wait_for_file(path, sizeof(id), timeout_s);
  std::memcpy(&id, bytes.data(), sizeof(id));
  return id;
}

}  // namespace

std::vector<std::unique_ptr<Comm>> make_nccl_comms(const std::vector<int>& devices) {
  check_devices("make_nccl_comms", devices);
  int n = int(devices.size());
  std::vector<ncclComm_t> raw(devices.size());
  STRATA_NCCL_CHECK(ncclCommInitAll(raw.data(), n, devices.data()));
  std::vector<std::unique_ptr<Comm>> comms;
  for (int r = 0; r < n; ++r) {
    try {
      comms.push_back(std::make_unique<NcclComm>(raw[size_t(r)], r, n, devices[size_t(r)]));
    } catch (...) {
      for (int k = r; k < n; ++k) ncclCommDestroy(raw[size_t(k)]);
      throw;
    }
  }
  return comms;
}

void nccl_unique_id_to_file(const std::string& path) {
  ncclUniqueId id;
  STRATA_NCCL_CHECK(ncclGetUniqueId(&id));
  detail::write_file_atomically(path, &id, sizeof(id));
}

std::vector<std::unique_ptr<Comm>> make_nccl_comms_from_file(const std::string& path,
                                                             int first_rank, int nranks,
                                                             const std::vector<int>& devices,
                                                             double timeout_s) {
  check_devices("make_nccl_comms_from_file", devices);
  int local = int(devices.size());
  STRATA_CHECK(nranks >= 1 && first_rank >= 0 && first_rank + local <= nranks,
               "dist::make_nccl_comms_from_file: ranks " << first_rank << " to "
                                                         << first_rank + local - 1
                                                         << " do not fit in " << nranks << " ranks");
  ncclUniqueId id = read_unique_id(path, timeout_s);
  std::vector<ncclComm_t> raw(devices.size());
  // Several ranks of one process must initialise inside one group, or the first
  // ncclCommInitRank would wait forever for the others.
  STRATA_NCCL_CHECK(ncclGroupStart());
  for (int i = 0; i < local; ++i) {
    STRATA_DIST_CUDA_CHECK(cudaSetDevice(devices[size_t(i)]));
    STRATA_NCCL_CHECK(ncclCommInitRank(&raw[size_t(i)], nranks, id, first_rank + i));
  }
  STRATA_NCCL_CHECK(ncclGroupEnd());
  std::vector<std::unique_ptr<Comm>> comms;
  for (int i = 0; i < local; ++i) {
    try {
      comms.push_back(
          std::make_unique<NcclComm>(raw[size_t(i)], first_rank + i, nranks, devices[size_t(i)]));
    } catch (...) {
      for (int k = i; k < local; ++k) ncclCommDestroy(raw[size_t(k)]);
      throw;
    }
  }
  return comms;
}

std::unique_ptr<Comm> make_nccl_comm_from_file(const std::string& path, int rank, int nranks,
                                               int device, double timeout_s) {
  auto comms = make_nccl_comms_from_file(path, rank, nranks, {device}, timeout_s);
  return std::move(comms.front());
}

}  // namespace strata::dist
