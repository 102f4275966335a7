// Emulated CUDA GELU, SwiGLU, RoPE and dropout (kernels/cuda/{activation,rope,
// dropout}.cu) against the CPU backend, every dtype, in place and out of place.
#include <catch2/catch.hpp>

#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: gelu forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  for (int64_t n : {1, 17, 1000}) {
    HostTensor x(dt, {n}), dy(dt, {n});
    x.uniform(1, -6, 6);
    dy.uniform(2);
    HostTensor want(dt, {n}), got(dt, {n});
    ops::gelu_forward({want.view(), x.view()}, cpu().stream());
    cuda_emu::gelu_forward({got.view(), x.view()}, emu());
    expect_match("gelu", got, want, 2.0);  // math.h tanhf vs the CPU's vectorised exp
    ops::gelu_backward({want.view(), dy.view(), x.view()}, cpu().stream());
    cuda_emu::gelu_backward({got.view(), dy.view(), x.view()}, emu());
    expect_match("gelu_backward", got, want, 2.0);
  }
}

TEST_CASE("cuda_emu: swiglu forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  for (auto [n, h] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 17}, {2, 1000}}) {
    HostTensor x(dt, {n, 2 * h}), dy(dt, {n, h});
    x.uniform(3, -6, 6);
    dy.uniform(4);
    HostTensor want(dt, {n, h}), got(dt, {n, h});
    ops::swiglu_forward({want.view(), x.view()}, cpu().stream());
    cuda_emu::swiglu_forward({got.view(), x.view()}, emu());
    expect_match("swiglu", got, want, 2.0);
    HostTensor dwant(dt, {n, 2 * h}), dgot(dt, {n, 2 * h});
    ops::swiglu_backward({dwant.view(), dy.view(), x.view()}, cpu().stream());
    cuda_emu::swiglu_backward({dgot.view(), dy.view(), x.view()}, emu());
    expect_match("swiglu_backward", dgot, dwant, 2.0);
  }
}

TEST_CASE("cuda_emu: rope forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  // {B, T, H, D, rotated heads}
  for (auto s : std::vector<std::vector<int64_t>>{{1, 1, 1, 2, 1}, {2, 17, 3, 8, 2}, {1, 5, 2, 34, 2}}) {
    const int64_t b = s[0], t = s[1], h = s[2], d = s[3];
    HostTensor x(dt, {b, t, h, d});
    x.uniform(5);
    ops::RopeArgs a;
    a.rotated_heads = s[4];
    a.pos_offset = 1000;  // large positions: the double-precision angle matters
    for (bool backward : {false, true}) {
      HostTensor want(dt, {b, t, h, d}), got(dt, {b, t, h, d});
      a.inp = x.view();
      a.out = want.view();
      backward ? ops::rope_backward(a, cpu().stream()) : ops::rope_forward(a, cpu().stream());
      a.out = got.view();
      backward ? cuda_emu::rope_backward(a, emu()) : cuda_emu::rope_forward(a, emu());
      expect_match(backward ? "rope_backward" : "rope_forward", got, want);
      // In place: inp aliases out.
      got.set_values(x.values());
      a.inp = a.out = got.view();
      backward ? cuda_emu::rope_backward(a, emu()) : cuda_emu::rope_forward(a, emu());
      expect_match("rope in place", got, want);
    }
  }
}

TEST_CASE("cuda_emu: dropout replays the CPU mask", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  for (int64_t n : {1, 17, 1001}) {
    for (float p : {0.0f, 0.1f, 0.5f}) {
      HostTensor x(dt, {n});
      x.uniform(6);
      ops::DropoutArgs a;
      a.p = p;
      a.key = {1234, 7, 9};
      a.inp = x.view();
      HostTensor want(dt, {n}), got(dt, {n});
      a.out = want.view();
      ops::dropout_forward(a, cpu().stream());
      a.out = got.view();
      cuda_emu::dropout_forward(a, emu());
      expect_match("dropout", got, want, 0.0);
      a.inp = a.out = got.view();  // backward in place on d_out
      cuda_emu::dropout_backward(a, emu());
      a.inp = a.out = want.view();
      ops::dropout_backward(a, cpu().stream());
      expect_match("dropout_backward", got, want, 0.0);
    }
  }
}

}  // namespace
}  // namespace strata::test
