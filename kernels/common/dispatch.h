// Host-side dtype dispatch shared by the CPU and CUDA backends: calls f(T{}) with T
// the storage type of a float dtype, so one templated kernel serves f32, bf16, f16.
#pragma once
#include "convert.h"
#include "strata/dtype.h"

namespace strata::num {

template <class F>
void dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16{}); return;
    case DType::f16: f(f16{}); return;
    case DType::i32: break;
  }
}

}  // namespace strata::num
