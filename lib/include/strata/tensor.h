// TensorView: a non-owning, contiguous, row-major view of device memory.
// Invariant: a view never frees what it points to; the owner (a unit's flat buffer,
// an arena Buffer, a mapped file) outlives every view made from it.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "dtype.h"

namespace strata {

class Device;

struct TensorView {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  DType dtype = DType::f32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  Device* device = nullptr;

  TensorView() = default;
  TensorView(void* data, DType dtype, std::initializer_list<int64_t> shape,
             Device* device = nullptr);

  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t size(int dim) const;  // negative dims count from the end
  bool defined() const { return data != nullptr; }

  template <class T>
  T* ptr() const {
    return static_cast<T*>(data);
  }

  // Same memory, new shape with the same element count (throws otherwise).
  TensorView reshape(std::initializer_list<int64_t> shape) const;
  // Rows [begin, end) along dim 0.
  TensorView slice_rows(int64_t begin, int64_t end) const;

  // "bf16[8, 256, 768]"
  std::string str() const;
};

// Host <-> device transfers of floating tensors (f32 / bf16 / f16), through
// Stream::copy on the tensor's device stream (plain host memory when it has none).
// Conversions run on the host with kernels/common's rounding (nearest even, as
// ops::cast), so CPU and CUDA devices hold bitwise the same values. Both wait for
// the stream before returning.
std::vector<float> copy_to_host_f32(const TensorView& t);
void copy_from_host_f32(const TensorView& t, const float* values);  // t.numel() values

}  // namespace strata
