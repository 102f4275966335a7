// Emulated CUDA attention (kernels/cuda/attention.cu, the FMA path for f32, and
// attention_flash.cu, the tensor-core path for bf16 / fp16) against the CPU backend:
// forward out and lse, backward d_qkv; causal and not, with and without dropout, T not
// a multiple of the tiles, head dims 64 and 128 (and odd ones, zero-padded), grouped-query
// and multi-query heads (n_kv_heads < n_heads), sliding windows (narrower than a tile,
// wider than one, and at a tile edge, so whole tiles are skipped), and the
// emulated WMMA API itself against a plain f32 computation.
#include <catch2/catch.hpp>
#include <cmath>

#include "cuda/emu/wmma.h"
#include "cuda/launch.cuh"
#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

struct Shape {
  int64_t b, t, nh, hd;
  int64_t nkv = 0;  // 0: n_heads
};

// Runs forward and backward on the CPU backend and on the emulated CUDA device with
// identical inputs and compares them. Slack multiplies expect_match's tolerance, which
// is about one storage ulp of the largest output magnitude (plus one ulp relative).
void check_attention(DType dt, const Shape& s, bool causal, float dropout, double slack_out, double slack_grad,
                     int64_t window = 0) {
  INFO("B " << s.b << " T " << s.t << " NH " << s.nh << " HD " << s.hd << " NKV " << s.nkv << " causal " << causal
            << " p " << dropout << " window " << window << " " << dtype_name(dt));
  const int64_t c3 = (s.nh + 2 * (s.nkv == 0 ? s.nh : s.nkv)) * s.hd;
  HostTensor qkv(dt, {s.b, s.t, c3}), d_out(dt, {s.b, s.t, s.nh, s.hd});
  qkv.uniform(1, -2, 2);
  d_out.uniform(2);
  HostTensor out_w(dt, {s.b, s.t, s.nh, s.hd}), out_g(dt, {s.b, s.t, s.nh, s.hd});
  HostTensor lse_w(DType::f32, {s.b, s.nh, s.t}), lse_g(DType::f32, {s.b, s.nh, s.t});
  ops::AttentionForwardArgs f;
  f.qkv = qkv.view(), f.n_heads = s.nh, f.n_kv_heads = s.nkv, f.causal = causal, f.dropout = dropout, f.dropout_key = {99, 1, 2};
  f.window = window;
  f.out = out_w.view(), f.lse = lse_w.view();
  ops::attention_forward(f, cpu().stream());
  f.out = out_g.view(), f.lse = lse_g.view();
  cuda_emu::attention_forward(f, emu());
  expect_match("out", out_g, out_w, slack_out);
  expect_match("lse", lse_g, lse_w, 4.0);  // f32: a few 1e-5 of max |lse|

  HostTensor dq_w(dt, {s.b, s.t, c3}), dq_g(dt, {s.b, s.t, c3});
  ops::AttentionBackwardArgs bw;
  bw.d_out = d_out.view(), bw.qkv = qkv.view(), bw.out = out_w.view(), bw.lse = lse_w.view();
  bw.n_heads = s.nh, bw.n_kv_heads = s.nkv, bw.causal = causal, bw.dropout = dropout, bw.dropout_key = f.dropout_key;
  bw.window = window;
  bw.d_qkv = dq_w.view();
  ops::attention_backward(bw, cpu().stream());
  bw.d_qkv = dq_g.view();
  cuda_emu::attention_backward(bw, emu());
  expect_match("d_qkv", dq_g, dq_w, slack_grad);
}

TEST_CASE("cuda_emu: attention forward and backward for every dtype on small heads", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const bool causal = GENERATE(true, false);
  const float dropout = GENERATE(0.0f, 0.2f);
  for (const Shape& s : {Shape{1, 1, 1, 4}, Shape{2, 37, 2, 8}, Shape{1, 70, 1, 17}})
    check_attention(dt, s, causal, dropout, 4.0, 8.0);
}

// The tensor-core path at the head dims it is built for. T = 77 is a multiple of
// neither tile (64 query rows, 64 or 32 key rows); 128 is a multiple of both.
TEST_CASE("cuda_emu: flash attention on WMMA at head dims 64 and 128", "[cuda_emu]") {
  const DType dt = GENERATE(DType::bf16, DType::f16);
  const int64_t hd = GENERATE(64, 128);
  const bool causal = GENERATE(true, false);
  for (const Shape& s : {Shape{1, 77, 2, hd}, Shape{1, 128, 1, hd}}) check_attention(dt, s, causal, 0.0f, 2.0, 2.0);
}

// Grouped-query (NKV = NH/2) and multi-query (NKV = 1) on both paths: the dK/dV block
// of a kv head sums its group's query heads.
TEST_CASE("cuda_emu: grouped-query attention on the FMA and tensor-core paths", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const bool causal = GENERATE(true, false);
  for (const Shape& s : {Shape{2, 37, 4, 8, 2}, Shape{1, 33, 4, 8, 1}}) check_attention(dt, s, causal, 0.2f, 4.0, 8.0);
  if (dt != DType::f32) check_attention(dt, Shape{1, 77, 4, 64, 1}, causal, 0.0f, 2.0, 2.0);
}

// Sliding windows on both paths: 1 (the diagonal only), 5 (inside one tile), 33 and 70
// (across tile edges of 16, 32 and 64 rows), and T = 150 so early key tiles are skipped.
TEST_CASE("cuda_emu: sliding-window attention on the FMA and tensor-core paths", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const int64_t window = GENERATE(1, 5, 33, 70);
  check_attention(dt, Shape{2, 37, 2, 8}, true, 0.2f, 4.0, 8.0, window);
  check_attention(dt, Shape{1, 150, 4, 8, 2}, true, 0.0f, 4.0, 8.0, window);
  if (dt != DType::f32) check_attention(dt, Shape{1, 150, 2, 64, 1}, true, 0.1f, 2.0, 2.0, window);
}

TEST_CASE("cuda_emu: flash attention with dropout and a padded head dim", "[cuda_emu]") {
  const DType dt = GENERATE(DType::bf16, DType::f16);
  check_attention(dt, Shape{1, 70, 1, 128}, true, 0.1f, 2.0, 2.0);
  check_attention(dt, Shape{2, 45, 1, 96}, false, 0.0f, 2.0, 2.0);  // runs padded to 128
}

// Every attention kernel's worst shared-memory bank conflict (the emulator's report:
// the k-th shared access of each lane between barriers is one warp instruction; WMMA
// loads and stores are recorded in the GPU's fragment pattern) is at most 2-way, over
// both paths, both head dims, odd T, causal and not.
TEST_CASE("cuda_emu: attention kernels have bank conflicts of degree at most 2", "[cuda_emu][sanitize]") {
  emu::reset_stats();
  check_attention(DType::f32, Shape{1, 45, 1, 64}, true, 0.0f, 4.0, 8.0);
  check_attention(DType::f32, Shape{1, 37, 2, 17}, false, 0.2f, 4.0, 8.0);
  check_attention(DType::bf16, Shape{1, 77, 1, 64}, true, 0.0f, 2.0, 2.0);
  check_attention(DType::f16, Shape{1, 77, 1, 128}, false, 0.1f, 2.0, 2.0);
  check_attention(DType::bf16, Shape{1, 40, 1, 96}, true, 0.0f, 2.0, 2.0);
  INFO(emu::conflict_report());
  for (const char* kernel : {"attention_forward_kernel", "attention_dkdv_kernel", "attention_dq_kernel",
                             "flash_forward_kernel", "flash_dkdv_kernel", "flash_dq_kernel"}) {
    const emu::KernelStats s = emu::kernel_stats(kernel);
    INFO(kernel << ": " << s.launches << " launches, " << s.instructions << " shared instructions, worst degree "
                << s.worst_degree << ", mean " << s.mean_degree);
    REQUIRE(s.launches > 0);
    REQUIRE(s.instructions > 0);
    CHECK(s.worst_degree <= 2);
  }
}

// ---------------------------------------------------------------- emulated WMMA
namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// d = 2 (a b + c): a row-major (16, 24-strided), b col-major, c read and d written
// column-major, the factor applied elementwise through x[].
static __global__ void wmma_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c) {
  FragA fa;
  FragB fb;
  FragC fc;
  wmma::load_matrix_sync(fa, a, 24);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(fc, c, 16, wmma::mem_col_major);
  wmma::mma_sync(fc, fa, fb, fc);
  for (int i = 0; i < fc.num_elements; ++i) fc.x[i] *= 2.0f;
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_col_major);
}

TEST_CASE("cuda_emu: emulated wmma: mma_sync sums exact products in f32 in k order", "[cuda_emu]") {
  alignas(64) __nv_bfloat16 a[16 * 24], b[16 * 16];
  alignas(64) float c[256], d[256];
  HostTensor ra(DType::bf16, {16 * 24}), rb(DType::bf16, {256}), rc(DType::f32, {256});
  ra.uniform(5, -3, 3), rb.uniform(6, -3, 3), rc.uniform(7, -1, 1);
  const std::vector<double> va = ra.values(), vb = rb.values(), vc = rc.values();
  for (int i = 0; i < 16 * 24; ++i) a[i] = {num::float_to_bf16(float(va[size_t(i)]))};
  for (int i = 0; i < 256; ++i) b[i] = {num::float_to_bf16(float(vb[size_t(i)]))}, c[i] = float(vc[size_t(i)]);
  cuda_emu::launch(wmma_kernel, dim3(1), dim3(32), 0, nullptr, d, static_cast<const __nv_bfloat16*>(a),
                   static_cast<const __nv_bfloat16*>(b), static_cast<const float*>(c));
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float want = c[col * 16 + r];  // column-major
      for (int k = 0; k < 16; ++k)
        want += num::bf16_to_float(a[r * 24 + k].bits) * num::bf16_to_float(b[col * 16 + k].bits);
      INFO("row " << r << " column " << col);
      REQUIRE(d[col * 16 + r] == 2.0f * want);  // bitwise: the same operations in the same order
    }
}

}  // namespace
}  // namespace strata::test
