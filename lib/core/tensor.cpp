#include "strata/tensor.h"

#include <cstring>
#include <sstream>

#include "lib/core/host_convert.h"
#include "strata/device.h"
#include "strata/error.h"

namespace strata {

TensorView::TensorView(void* data_, DType dtype_, std::initializer_list<int64_t> dims,
                       Device* device_)
    : data(data_), dtype(dtype_), device(device_) {
  STRATA_CHECK(dims.size() >= 1 && dims.size() <= size_t(kMaxDims),
               "TensorView: " << dims.size() << " dimensions given, 1 to " << kMaxDims
                              << " are supported");
  for (int64_t d : dims) {
    STRATA_CHECK(d >= 0, "TensorView: negative dimension " << d);
    shape[ndim++] = d;
  }
}

int64_t TensorView::numel() const {
  if (ndim == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

int64_t TensorView::size(int dim) const {
  int d = dim < 0 ? dim + ndim : dim;
  STRATA_CHECK(d >= 0 && d < ndim, "TensorView::size: dimension " << dim << " of " << str());
  return shape[d];
}

TensorView TensorView::reshape(std::initializer_list<int64_t> dims) const {
  TensorView v(data, dtype, dims, device);
  STRATA_CHECK(v.numel() == numel(),
               "TensorView::reshape: " << str() << " has " << numel() << " elements, the new shape "
                                       << v.str() << " has " << v.numel());
  return v;
}

TensorView TensorView::slice_rows(int64_t begin, int64_t end) const {
  STRATA_CHECK(ndim >= 1 && begin >= 0 && begin <= end && end <= shape[0],
               "TensorView::slice_rows: rows [" << begin << ", " << end << ") of " << str());
  TensorView v = *this;
  int64_t row = numel() / (shape[0] ? shape[0] : 1);
  v.data = static_cast<char*>(data) + size_t(begin * row) * dtype_size(dtype);
  v.shape[0] = end - begin;
  return v;
}

std::string TensorView::str() const {
  std::ostringstream s;
  s << dtype_name(dtype) << "[";
  for (int i = 0; i < ndim; ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

namespace {
// Raw copy into / out of t's memory, waiting for the stream when it has a device.
void copy_raw(const TensorView& t, void* dst, const void* src, size_t bytes) {
  if (!t.device) {
    std::memcpy(dst, src, bytes);
    return;
  }
  Stream& s = t.device->stream();
  s.copy(dst, src, bytes);
  s.synchronize();
}
}  // namespace

std::vector<float> copy_to_host_f32(const TensorView& t) {
  const io::FloatFormat f = io::float_format(t.dtype);
  const size_t n = size_t(t.numel());
  std::vector<float> out(n);
  if (f == io::FloatFormat::f32) {
    copy_raw(t, out.data(), t.data, t.nbytes());
    return out;
  }
  std::vector<char> raw(t.nbytes());
  copy_raw(t, raw.data(), t.data, raw.size());
  io::to_f32(raw.data(), f, out.data(), n);
  return out;
}

void copy_from_host_f32(const TensorView& t, const float* values) {
  const io::FloatFormat f = io::float_format(t.dtype);
  if (f == io::FloatFormat::f32) return copy_raw(t, t.data, values, t.nbytes());
  std::vector<char> raw(t.nbytes());
  io::from_f32(values, raw.data(), f, size_t(t.numel()));
  copy_raw(t, t.data, raw.data(), raw.size());
}

}  // namespace strata
