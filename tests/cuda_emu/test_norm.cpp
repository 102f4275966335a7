// Emulated CUDA LayerNorm / RMSNorm (kernels/cuda/norm.cu) against the CPU backend:
// forward outputs and statistics, backward d_inp and accumulated d_weight / d_bias
// (parameter gradients in the activation dtype and in f32).
#include <catch2/catch.hpp>

#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: norm forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const bool rms = GENERATE(false, true);
  for (auto [n, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 17}, {70, 33}, {5, 1000}}) {
    for (DType gdt : {dt, DType::f32}) {
      INFO("N " << n << " C " << c << (rms ? " rms" : " layernorm") << " grad " << dtype_name(gdt));
      HostTensor inp(dt, {n, c}), weight(dt, {c}), bias(dt, {c}), d_out(dt, {n, c});
      inp.uniform(1, -1, 3);
      weight.uniform(2, 0.5, 1.5);
      bias.uniform(3);
      d_out.uniform(4);
      struct Result {
        HostTensor out, mean, rstd, d_inp, d_weight, d_bias;
      };
      auto make = [&] {
        Result r{HostTensor(dt, {n, c}), HostTensor(DType::f32, {n}), HostTensor(DType::f32, {n}),
                 HostTensor(dt, {n, c}), HostTensor(gdt, {c}), HostTensor(gdt, {c})};
        r.d_weight.uniform(5);
        r.d_bias.uniform(6);
        return r;
      };
      Result want = make(), got = make();
      auto fwd = [&](Result& r) {
        ops::NormForwardArgs a;
        a.out = r.out.view();
        a.mean = rms ? TensorView() : r.mean.view();
        a.rstd = r.rstd.view();
        a.inp = inp.view();
        a.weight = weight.view();
        a.bias = rms ? TensorView() : bias.view();
        a.rms = rms;
        return a;
      };
      auto bwd = [&](Result& r) {
        ops::NormBackwardArgs a;
        a.d_inp = r.d_inp.view();
        a.d_weight = r.d_weight.view();
        a.d_bias = rms ? TensorView() : r.d_bias.view();
        a.d_out = d_out.view();
        a.inp = inp.view();
        a.weight = weight.view();
        a.mean = rms ? TensorView() : want.mean.view();
        a.rstd = want.rstd.view();
        a.rms = rms;
        return a;
      };
      ops::norm_forward(fwd(want), cpu().stream());
      cuda_emu::norm_forward(fwd(got), emu());
      expect_match("out", got.out, want.out);
      expect_match("rstd", got.rstd, want.rstd);
      if (!rms) expect_match("mean", got.mean, want.mean);
      ops::norm_backward(bwd(want), cpu().stream());
      cuda_emu::norm_backward(bwd(got), emu());
      expect_match("d_inp", got.d_inp, want.d_inp, 4.0);
      expect_match("d_weight", got.d_weight, want.d_weight, 4.0);
      if (!rms) expect_match("d_bias", got.d_bias, want.d_bias, 4.0);
    }
  }
}

}  // namespace
}  // namespace strata::test
