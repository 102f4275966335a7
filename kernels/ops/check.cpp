#include "check.h"

#if defined(STRATA_CUDA_EMULATION)
#include "cuda/runtime.h"
#endif

#include <sstream>

namespace strata::ops::check {

namespace {
std::string dims_str(std::initializer_list<int64_t> dims) {
  std::ostringstream s;
  s << "[";
  bool first = true;
  for (int64_t d : dims) {
    s << (first ? "" : ", ") << d;
    first = false;
  }
  s << "]";
  return s.str();
}
}  // namespace

void fail(const char* op, const char* arg, const TensorView& t, const std::string& what) {
  STRATA_FAIL(op << ": argument '" << arg << "' " << (t.ndim ? t.str() : std::string("(undefined)"))
                 << " " << what);
}

void present(const char* op, const char* arg, const TensorView& t, const Stream& s) {
  if (!t.data) fail(op, arg, t, "is a null pointer: pass a defined tensor");
  if (t.numel() == 0) fail(op, arg, t, "is empty: every dimension must be at least 1");
  if (t.device && t.device != &s.device())
    fail(op, arg, t, "lives on " + t.device->name() + " but the op runs on " + s.device().name());
#if defined(STRATA_CUDA_EMULATION)
  // The emulated device shares the host's address space: check what a GPU would
  // fault on, host memory handed to a CUDA op (copy it with Stream::copy first).
  if (s.device().kind() == DeviceKind::cuda && !cuda_runtime::is_device_memory(t.data, t.nbytes()))
    fail(op, arg, t, "is not CUDA device memory (host memory passed to a CUDA op?); copy it with Stream::copy");
#endif
}

void dtype(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype == d) return;
  std::string names;
  for (DType d : allowed) names += std::string(names.empty() ? "" : " or ") + dtype_name(d);
  fail(op, arg, t, std::string("has dtype ") + dtype_name(t.dtype) + ", expected " + names);
}

void floating(const char* op, const char* arg, const TensorView& t) {
  dtype(op, arg, t, {DType::f32, DType::bf16, DType::f16});
}

void same_dtype(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                const TensorView& ref) {
  if (t.dtype != ref.dtype)
    fail(op, arg, t,
         std::string("must have the dtype of '") + ref_arg + "' (" + dtype_name(ref.dtype) + ")");
}

void shape(const char* op, const char* arg, const TensorView& t, std::initializer_list<int64_t> dims) {
  bool ok = int(dims.size()) == t.ndim;
  int i = 0;
  for (int64_t d : dims) ok = ok && t.shape[i++] == d;
  if (!ok) fail(op, arg, t, "has the wrong shape: expected " + dims_str(dims));
}

void numel(const char* op, const char* arg, const TensorView& t, int64_t n) {
  if (t.numel() != n)
    fail(op, arg, t, "has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(n));
}

bool overlaps(const TensorView& x, const TensorView& y) {
  auto* x0 = static_cast<const char*>(x.data);
  auto* y0 = static_cast<const char*>(y.data);
  return x0 < y0 + y.nbytes() && y0 < x0 + x.nbytes();
}

int64_t last_dim(const TensorView& t) { return t.ndim ? t.shape[t.ndim - 1] : 0; }

int64_t rows(const TensorView& t) {
  int64_t c = last_dim(t);
  return c ? t.numel() / c : 0;
}

}  // namespace strata::ops::check
