// The CUDA runtime behind strata::Device: opening a GPU, its streams and events,
// device and pinned memory, the per-stream scratch, the cuBLASLt handle, plan cache
// and workspace (one allocation from the device's arena, made at the first op), and
// the launch-error check of launch.cuh (STRATA_CUDA_SYNC=1: synchronize after each
// launch, so a fault names its kernel). Every CUDA / cuBLAS call is checked by
// STRATA_CUDA_CHECK / STRATA_CUBLAS_CHECK (expression, file:line in the error).
// Every call that touches a device runs with that device current (DeviceGuard, or the
// device of the stream it is given), so two GPUs in one process keep their own buffers.
// Invariant: scratch grows stream-ordered (cudaFreeAsync / cudaMallocAsync on the
// compute stream), so an op's scratch is never freed under a kernel still using it.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cxxabi.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "cuda_ops.h"
#include "launch.cuh"
#include "lib/dist/cuda_stream.h"
#include "runtime.h"
#include "strata/error.h"

#define STRATA_CUDA_CHECK(expr)                                                                        \
  do {                                                                                                 \
    cudaError_t strata_status_ = (expr);                                                               \
    if (strata_status_ != cudaSuccess)                                                                 \
      ::strata::detail::throw_call_error(#expr, cudaGetErrorString(strata_status_), __FILE__, __LINE__); \
  } while (0)

#define STRATA_CUDA_CHECK_PRINT(expr)                                                                    \
  do {                                                                                                   \
    cudaError_t strata_status_ = (expr);                                                                 \
    if (strata_status_ != cudaSuccess)                                                                   \
      ::strata::detail::print_call_error(#expr, cudaGetErrorString(strata_status_), __FILE__, __LINE__); \
  } while (0)

namespace strata {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

bool built_with_cuda() { return true; }

namespace cuda {

void check_launch(cudaError_t status, const char* what) {
  if (status != cudaSuccess) ::strata::detail::throw_call_error(what, cudaGetErrorString(status), __FILE__, __LINE__);
}

bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("STRATA_CUDA_SYNC");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

namespace {
// The kernel's name, demangled where it can be ("strata::cuda::(anonymous)::k<float>(...)").
std::string kernel_name(const void* kernel) {
  const char* name = nullptr;
  if (cudaFuncGetName(&name, kernel) != cudaSuccess || !name) {
    cudaGetLastError();
    return "an unnamed kernel";
  }
  int status = 0;
  char* readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && readable ? readable : name;
  std::free(readable);
  return out;
}
}  // namespace

void after_launch(const void* kernel, void* stream) {
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess && sync_after_launch()) status = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  if (status != cudaSuccess)
    ::strata::detail::throw_call_error(
        sync_after_launch() ? "kernel launch (STRATA_CUDA_SYNC=1: synchronized after it)" : "kernel launch",
        std::string(cudaGetErrorString(status)) + " in " + kernel_name(kernel), __FILE__, __LINE__);
}

namespace {
// Stream-ordered scratch: grows on the stream it serves, never shrinks.
class StreamScratch : public Scratch {
 public:
  explicit StreamScratch(cudaStream_t s) : stream_(s) {}
  ~StreamScratch() override {
    if (data_) STRATA_CUDA_CHECK_PRINT(cudaFreeAsync(data_, stream_));
  }
  void* get(size_t bytes) override {
    if (bytes > size_) {
      if (data_) STRATA_CUDA_CHECK(cudaFreeAsync(data_, stream_));
      size_ = (bytes + 255) / 256 * 256 * 5 / 4;  // some headroom: fewer regrowths
      STRATA_CUDA_CHECK(cudaMallocAsync(&data_, size_, stream_));
    }
    return data_;
  }

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
  size_t size_ = 0;
};
}  // namespace

}  // namespace cuda

namespace cuda_runtime {

namespace {
// Makes `index` the thread's current device for its scope and restores the one before.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    STRATA_CUDA_CHECK(cudaGetDevice(&before_));
    if (before_ == index)
      before_ = -1;
    else
      STRATA_CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() {
    if (before_ >= 0) STRATA_CUDA_CHECK_PRINT(cudaSetDevice(before_));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int before_ = -1;
};

int device_of(void* stream) {
  int device = 0;
  STRATA_CUDA_CHECK(cudaStreamGetDevice(static_cast<cudaStream_t>(stream), &device));
  return device;
}
}  // namespace

struct DeviceState {
  int index = 0;
  cudaStream_t streams[4] = {};
  cuda::StreamScratch* scratch = nullptr;  // of the compute stream
  cublasLtHandle_t blas = nullptr;
  cuda::GemmPlans* blas_plans = nullptr;
  // From the device's arena at the first op (the arena exists only after open()), so
  // the budget counts it; freed in close(), which ~Device calls before the arena goes.
  std::once_flag blas_workspace_once;
  Arena* blas_workspace_arena = nullptr;
  void* blas_workspace = nullptr;
  size_t blas_workspace_bytes = size_t(32) << 20;  // cuBLASLt's advice for Hopper
};

namespace {
// What NCCL enqueues on (lib/dist/cuda_stream.h): a CUDA stream's cudaStream_t.
void* native_stream_of(Stream& stream) {
  return stream.device().kind() == DeviceKind::cuda ? stream.native() : nullptr;
}
}  // namespace

DeviceState* open(int index, size_t& budget) {
  const int count = cuda_device_count();
  if (count == 0)
    STRATA_FAIL("no CUDA device: cuda:" << index
                                        << " was requested but the CUDA runtime finds no usable GPU (no driver, "
                                           "no device, or CUDA_VISIBLE_DEVICES hides them); run on a CPU device");
  STRATA_CHECK(index >= 0 && index < count,
               "no CUDA device: cuda:" << index << " was requested but only " << count << " GPU(s) are visible");
  DeviceGuard guard(index);
  dist::detail::set_native_stream_accessor(native_stream_of);
  auto* s = new DeviceState;
  s->index = index;
  for (cudaStream_t& st : s->streams) STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  s->scratch = new cuda::StreamScratch(s->streams[0]);
  if (cublasLtCreate(&s->blas) != CUBLAS_STATUS_SUCCESS) STRATA_FAIL("cuda:" << index << ": cublasLtCreate failed");
  s->blas_plans = cuda::gemm_plans_create();
  if (budget == 0) {
    size_t free_bytes = 0, total = 0;
    STRATA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    budget = free_bytes;
  }
  return s;
}

namespace {
void close_on_current(DeviceState* s);
}

void close(DeviceState* s) {
  if (!s) return;
  try {
    DeviceGuard guard(s->index);
    close_on_current(s);
  } catch (const std::exception& e) {
    ::strata::detail::print_call_error("closing a CUDA device", e.what(), __FILE__, __LINE__);
  }
}

namespace {
void close_on_current(DeviceState* s) {
  STRATA_CUDA_CHECK_PRINT(cudaDeviceSynchronize());
  delete s->scratch;
  if (s->blas_workspace) s->blas_workspace_arena->free(s->blas_workspace);
  cuda::gemm_plans_destroy(s->blas_plans);
  cublasLtDestroy(s->blas);
  for (cudaStream_t st : s->streams) STRATA_CUDA_CHECK_PRINT(cudaStreamDestroy(st));
  delete s;
}
}  // namespace

void* stream(DeviceState* s, StreamRole role) { return s->streams[int(role)]; }

std::string product_name(int index) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return prop.name;
}

void synchronize(void* stream) {
  DeviceGuard guard(device_of(stream));
  STRATA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void* event_create() {
  cudaEvent_t e;
  STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}
void event_destroy(void* e) { STRATA_CUDA_CHECK_PRINT(cudaEventDestroy(static_cast<cudaEvent_t>(e))); }
void event_record(void* e, void* stream) {
  DeviceGuard guard(device_of(stream));
  STRATA_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(stream)));
}
bool event_query(void* e) {
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(e));
  if (status == cudaErrorNotReady) return false;
  STRATA_CUDA_CHECK(status);
  return true;
}
void event_synchronize(void* e) { STRATA_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e))); }
void* timing_event_create() {
  cudaEvent_t e;
  STRATA_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}
void* timing_event_create(int device) {
  DeviceGuard guard(device);
  return timing_event_create();
}
float event_elapsed_ms(void* start, void* end) {
  STRATA_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(end)));
  float ms = 0;
  STRATA_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

double memory_bandwidth(int index) {
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, index) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, index) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0;  // DDR: two transfers a clock
}

void stream_wait(void* stream, void* e) {
  DeviceGuard guard(device_of(stream));
  STRATA_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(e), 0));
}

namespace {
// cudaMalloc / cudaFree for GPU I's arena under a guard: an ArenaMemory holds plain
// function pointers, so each device has its own instantiation.
constexpr int kMaxDevices = 16;
template <int I>
void* allocate_on(size_t bytes, size_t) {
  DeviceGuard guard(I);
  void* p = nullptr;  // cudaMalloc: 256-byte aligned at least
  return cudaMalloc(&p, bytes) == cudaSuccess ? p : (cudaGetLastError(), nullptr);
}
template <int I>
void free_on(void* p) {
  try {
    DeviceGuard guard(I);
    STRATA_CUDA_CHECK_PRINT(cudaFree(p));
  } catch (const std::exception& e) {
    ::strata::detail::print_call_error("cudaFree", e.what(), __FILE__, __LINE__);
  }
}
template <size_t... I>
ArenaMemory device_memory_of(int index, std::index_sequence<I...>) {
  static constexpr void* (*allocate[])(size_t, size_t) = {allocate_on<int(I)>...};
  static constexpr void (*release[])(void*) = {free_on<int(I)>...};
  return {allocate[index], release[index], "CUDA device memory", /*host_addressable=*/false, /*segments=*/true};
}
}  // namespace

ArenaMemory device_memory(int index) {
  STRATA_CHECK(index >= 0 && index < kMaxDevices,
               "cuda:" << index << ": strata drives at most " << kMaxDevices << " GPUs in one process");
  return device_memory_of(index, std::make_index_sequence<kMaxDevices>{});
}

bool host_register(void* p, size_t bytes) {
  if (cudaHostRegister(p, bytes, cudaHostRegisterPortable) != cudaSuccess) {
    cudaGetLastError();  // clear it: the caller keeps pageable memory and says so
    return false;
  }
  return true;
}
void host_unregister(void* p) { STRATA_CUDA_CHECK_PRINT(cudaHostUnregister(p)); }

void launch_host_function(void* stream, std::function<void()> fn) {
  DeviceGuard guard(device_of(stream));
  auto* heap = new std::function<void()>(std::move(fn));
  const cudaError_t status = cudaLaunchHostFunc(
      static_cast<cudaStream_t>(stream),
      [](void* data) {
        std::unique_ptr<std::function<void()>> f(static_cast<std::function<void()>*>(data));
        try {
          (*f)();
        } catch (const std::exception& e) {
          ::strata::detail::print_call_error("a stream's host function", e.what(), __FILE__, __LINE__);
        }
      },
      heap);
  if (status != cudaSuccess) delete heap;
  STRATA_CUDA_CHECK(status);
}

void copy_async(void* dst, const void* src, size_t bytes, void* stream) {
  DeviceGuard guard(device_of(stream));
  STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
}

}  // namespace cuda_runtime

namespace cuda {

Context context(Stream& st) {
  auto* s = static_cast<cuda_runtime::DeviceState*>(st.device().backend());
  // The op's launches follow on this thread: its device becomes current (and stays).
  int current = -1;
  STRATA_CUDA_CHECK(cudaGetDevice(&current));
  if (current != s->index) STRATA_CUDA_CHECK(cudaSetDevice(s->index));
  std::call_once(s->blas_workspace_once, [&] {  // throws (arena full): retried at the next op
    s->blas_workspace = st.device().arena().allocate(s->blas_workspace_bytes, "cuBLASLt workspace");
    s->blas_workspace_arena = &st.device().arena();
  });
  return Context{st.native(), s->scratch, s->blas, s->blas_workspace, s->blas_workspace_bytes, s->blas_plans};
}

}  // namespace cuda
}  // namespace strata
