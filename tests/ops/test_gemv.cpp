// The few-row f32 / bf16 matmul (kernels/cpu/gemv.cpp, decoding's rows against a weight read
// in place): bitwise the GEMM path's rows, with and without bias, with the GELU
// epilogue and a padded out, and close to a double-precision reference.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

constexpr int64_t kManyRows = 20;  // past any few-row path: the GEMM tiles

TEST_CASE("matmul_forward over 1 to 4 rows in f32 and bf16 is bitwise those rows of a many-row matmul", "[ops][cpu]") {
  const DType dt = GENERATE(DType::f32, DType::bf16);
  const bool bias = GENERATE(false, true);
  const int epilogue = GENERATE(0, 1, 2);  // 0 none, 1 GELU epilogue, 2 padded out
  for (auto [IC, OC] : {std::pair<int64_t, int64_t>{16, 16}, {37, 45}, {64, 200}, {130, 33}, {300, 17}, {1100, 20}}) {
    const int64_t OCp = epilogue == 2 ? OC + 7 : OC;
    HostTensor w(dt, {OC, IC}), b(dt, {OC}), inp(dt, {kManyRows, IC});
    w.uniform(1, -0.5, 0.5), b.uniform(2), inp.uniform(3, -2, 2);
    HostTensor many(dt, {kManyRows, OCp}), many_pre(dt, {kManyRows, OC});
    many.fill(7);
    const TensorView bv = bias ? b.view() : TensorView{};
    ops::matmul_forward({many.view(), inp.view(), w.view(), bv, epilogue == 1 ? many_pre.view() : TensorView{},
                         epilogue == 2},
                        cpu().stream());
    for (int64_t n = 1; n <= 4; ++n) {
      INFO(dtype_name(dt) << " IC " << IC << " OC " << OC << " rows " << n << " bias " << bias << " epilogue " << epilogue);
      HostTensor few(dt, {n, OCp}), few_pre(dt, {n, OC});
      few.fill(7);
      const TensorView rows = inp.view().slice_rows(0, n);
      ops::matmul_forward({few.view(), rows, w.view(), bv, epilogue == 1 ? few_pre.view() : TensorView{},
                           epilogue == 2},
                          cpu().stream());
      cpu().stream().synchronize();
      CHECK(std::memcmp(few.view().data, many.view().data, size_t(n * OCp) * dtype_size(dt)) == 0);  // padding columns kept too
      if (epilogue == 1) CHECK(std::memcmp(few_pre.view().data, many_pre.view().data, size_t(n * OC) * dtype_size(dt)) == 0);
      if (epilogue == 0) {
        std::vector<double> ref(size_t(n * OC));
        for (int64_t r = 0; r < n; ++r)
          for (int64_t j = 0; j < OC; ++j) {
            double s = bias ? b.get(j) : 0.0;
            for (int64_t k = 0; k < IC; ++k) s += inp.get(r * IC + k) * w.get(j * IC + k);
            ref[size_t(r * OC + j)] = s;
          }
        expect_close("out", few, ref, tolerance_for(dt));
      }
    }
  }
}

}  // namespace
}  // namespace strata::test
