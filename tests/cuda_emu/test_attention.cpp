// Emulated CUDA flash-style attention (kernels/cuda/attention.cu) against the CPU
// backend: forward out and lse, backward d_qkv; causal and not, with and without
// dropout, T not a multiple of the tile, every dtype.
#include <catch2/catch.hpp>

#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: attention forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const bool causal = GENERATE(true, false);
  const float dropout = GENERATE(0.0f, 0.2f);
  // {B, T, NH, HD}
  for (auto s : std::vector<std::vector<int64_t>>{{1, 1, 1, 4}, {2, 37, 2, 8}, {1, 70, 1, 17}}) {
    const int64_t b = s[0], t = s[1], nh = s[2], hd = s[3];
    INFO("B " << b << " T " << t << " NH " << nh << " HD " << hd << " causal " << causal << " p " << dropout);
    HostTensor qkv(dt, {b, t, 3 * nh * hd}), d_out(dt, {b, t, nh, hd});
    qkv.uniform(1, -2, 2);
    d_out.uniform(2);
    HostTensor out_w(dt, {b, t, nh, hd}), out_g(dt, {b, t, nh, hd});
    HostTensor lse_w(DType::f32, {b, nh, t}), lse_g(DType::f32, {b, nh, t});
    ops::AttentionForwardArgs f;
    f.qkv = qkv.view(), f.n_heads = nh, f.causal = causal, f.dropout = dropout, f.dropout_key = {99, 1, 2};
    f.out = out_w.view(), f.lse = lse_w.view();
    ops::attention_forward(f, cpu().stream());
    f.out = out_g.view(), f.lse = lse_g.view();
    cuda_emu::attention_forward(f, emu());
    expect_match("out", out_g, out_w, 4.0);
    expect_match("lse", lse_g, lse_w, 4.0);

    HostTensor dq_w(dt, {b, t, 3 * nh * hd}), dq_g(dt, {b, t, 3 * nh * hd});
    ops::AttentionBackwardArgs bw;
    bw.d_out = d_out.view(), bw.qkv = qkv.view(), bw.out = out_w.view(), bw.lse = lse_w.view();
    bw.n_heads = nh, bw.causal = causal, bw.dropout = dropout, bw.dropout_key = f.dropout_key;
    bw.d_qkv = dq_w.view();
    ops::attention_backward(bw, cpu().stream());
    bw.d_qkv = dq_g.view();
    cuda_emu::attention_backward(bw, emu());
    expect_match("d_qkv", dq_g, dq_w, 8.0);
  }
}

}  // namespace
}  // namespace strata::test
