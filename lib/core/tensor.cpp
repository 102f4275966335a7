#include "strata/tensor.h"

#include <sstream>

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

}  // namespace strata
