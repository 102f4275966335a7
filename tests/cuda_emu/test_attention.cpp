// Emulated CUDA attention (kernels/cuda/attention.cu, the FMA path for f32, and
// attention_flash.cu, the tensor-core path for bf16 / fp16): every kernel's worst
// shared-memory bank conflict, and the emulated WMMA API itself against a plain f32
// computation. Their results against the CPU backend are op-table cases
// (tests/ops/cases/attention.cpp, run by test_op_table.cpp).
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

// Forward then backward on the emulated device, for the kernels' statistics (the op
// table, tests/ops/cases/attention.cpp, compares their results with the CPU).
void run_attention(DType dt, const Shape& s, bool causal, float dropout) {
  const int64_t c3 = (s.nh + 2 * (s.nkv == 0 ? s.nh : s.nkv)) * s.hd;
  HostTensor qkv(dt, {s.b, s.t, c3}), d_out(dt, {s.b, s.t, s.nh, s.hd}), d_qkv(dt, {s.b, s.t, c3});
  HostTensor out(dt, {s.b, s.t, s.nh, s.hd}), lse(DType::f32, {s.b, s.nh, s.t});
  qkv.uniform(1, -2, 2);
  d_out.uniform(2);
  ops::AttentionForwardArgs f;
  f.out = out.view(), f.lse = lse.view(), f.qkv = qkv.view(), f.n_heads = s.nh, f.n_kv_heads = s.nkv;
  f.causal = causal, f.dropout = dropout, f.dropout_key = {99, 1, 2};
  cuda_emu::attention_forward(f, emu());
  ops::AttentionBackwardArgs bw;
  bw.d_qkv = d_qkv.view(), bw.d_out = d_out.view(), bw.qkv = qkv.view(), bw.out = out.view(), bw.lse = lse.view();
  bw.n_heads = s.nh, bw.n_kv_heads = s.nkv, bw.causal = causal, bw.dropout = dropout, bw.dropout_key = f.dropout_key;
  cuda_emu::attention_backward(bw, emu());
}

// Every attention kernel's worst shared-memory bank conflict (the emulator's report:
// the k-th shared access of each lane between barriers is one warp instruction; WMMA
// loads and stores are recorded in the GPU's fragment pattern) is at most 2-way, over
// both paths, both head dims, odd T, causal and not.
TEST_CASE("cuda_emu: attention kernels have bank conflicts of degree at most 2", "[cuda_emu][sanitize]") {
  emu::reset_stats();
  run_attention(DType::f32, Shape{1, 45, 1, 64}, true, 0.0f);
  run_attention(DType::f32, Shape{1, 37, 2, 17}, false, 0.2f);
  run_attention(DType::bf16, Shape{1, 77, 1, 64}, true, 0.0f);
  run_attention(DType::f16, Shape{1, 77, 1, 128}, false, 0.1f);
  run_attention(DType::bf16, Shape{1, 40, 1, 96}, true, 0.0f);
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
