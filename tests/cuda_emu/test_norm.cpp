// Emulated CUDA LayerNorm / RMSNorm (kernels/cuda/norm.cu) against the CPU backend:
// forward outputs and statistics, backward d_inp and accumulated d_weight / d_bias
// (parameter gradients in the activation dtype and in f32); the same kernels fused
// with the residual add (residual_norm_forward / _backward), in place and not.
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

TEST_CASE("cuda_emu: residual + norm forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const bool rms = GENERATE(false, true);
  for (auto [n, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 17}, {70, 33}, {5, 1000}}) {
    for (bool in_place : {false, true}) {
      INFO("N " << n << " C " << c << (rms ? " rms" : " layernorm") << (in_place ? " in place" : ""));
      HostTensor x(dt, {n, c}), weight(dt, {c}), bias(dt, {c}), d_out(dt, {n, c});
      x.uniform(1, -1, 3);
      weight.uniform(2, 0.5, 1.5);
      bias.uniform(3);
      d_out.uniform(4);
      // y and d_resid are per result: in place, res_out overwrites y and d_res d_resid.
      struct Result {
        HostTensor y, res, out, mean, rstd, d_resid, d_res, d_weight, d_bias;
      };
      auto make = [&] {
        Result r{HostTensor(dt, {n, c}),        HostTensor(dt, {n, c}),        HostTensor(dt, {n, c}),
                 HostTensor(DType::f32, {n}),    HostTensor(DType::f32, {n}),    HostTensor(dt, {n, c}),
                 HostTensor(dt, {n, c}),        HostTensor(DType::f32, {c}),   HostTensor(DType::f32, {c})};
        r.y.uniform(5, -0.5, 0.5);
        r.d_resid.uniform(6);
        r.d_weight.uniform(7);
        r.d_bias.uniform(8);
        return r;
      };
      Result want = make(), got = make();
      auto fwd = [&](Result& r) {
        ops::ResidualNormForwardArgs a;
        a.res_out = in_place ? r.y.view() : r.res.view();
        a.out = r.out.view();
        a.mean = rms ? TensorView() : r.mean.view();
        a.rstd = r.rstd.view();
        a.x = x.view();
        a.y = r.y.view();
        a.weight = weight.view();
        a.bias = rms ? TensorView() : bias.view();
        a.rms = rms;
        return a;
      };
      auto bwd = [&](Result& r) {
        ops::ResidualNormBackwardArgs a;
        a.d_res = in_place ? r.d_resid.view() : r.d_res.view();
        a.d_weight = r.d_weight.view();
        a.d_bias = rms ? TensorView() : r.d_bias.view();
        a.d_resid = r.d_resid.view();
        a.d_out = d_out.view();
        a.inp = in_place ? want.y.view() : want.res.view();  // the CPU's sum: same inputs for both
        a.weight = weight.view();
        a.mean = rms ? TensorView() : want.mean.view();
        a.rstd = want.rstd.view();
        a.rms = rms;
        return a;
      };
      ops::residual_norm_forward(fwd(want), cpu().stream());
      cuda_emu::residual_norm_forward(fwd(got), emu());
      expect_match("res_out", in_place ? got.y : got.res, in_place ? want.y : want.res);
      expect_match("out", got.out, want.out);
      expect_match("rstd", got.rstd, want.rstd);
      if (!rms) expect_match("mean", got.mean, want.mean);
      ops::residual_norm_backward(bwd(want), cpu().stream());
      cuda_emu::residual_norm_backward(bwd(got), emu());
      expect_match("d_res", in_place ? got.d_resid : got.d_res, in_place ? want.d_resid : want.d_res, 4.0);
      expect_match("d_weight", got.d_weight, want.d_weight, 4.0);
      if (!rms) expect_match("d_bias", got.d_bias, want.d_bias, 4.0);
    }
  }
}

}  // namespace
}  // namespace strata::test
