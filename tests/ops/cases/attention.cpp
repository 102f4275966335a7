// Reference cases for attention_forward / attention_backward, for every backend: the
// double reference of tests/ops/attention_reference.h over causal and bidirectional
// attention, dropout, grouped-query and multi-query heads and sliding windows. On CUDA,
// f32 runs the FMA kernels and bf16 / fp16 the tensor-core flash kernels, so the
// flash shapes cover head dims 64 and 128 (and 96, run padded to 128), T a multiple of
// neither tile and of both, and windows that skip whole key tiles.
// Finite differences and argument errors: tests/ops/test_attention.cpp.
#include "ops.h"
#include "ops/attention_reference.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

// The CUDA kernels sum a row's scores in another order (online softmax, by tile).
constexpr double kForwardSlack = 4.0, kBackwardSlack = 8.0;
// Real hardware: lse within ten times f32's tolerance, as the selftest allowed.
constexpr double kForwardHardwareSlack = 10.0;

void run_forward(OpEnv& e, const std::vector<int64_t>& shape, HostTensor& qkv, HostTensor& out, HostTensor& lse,
                 AttentionConfig cfg) {
  ops::attention_forward({e.at(out), e.at(lse), e.at(qkv), shape[2], cfg.causal, cfg.dropout, kAttentionKey,
                          kv_heads(shape), cfg.window},
                         e.stream());
}

void forward_case(OpEnv& e, DType dtype, const std::vector<int64_t>& shape,
                  const std::vector<AttentionConfig>& configs) {
  HostTensor qkv = make_qkv(dtype, shape, 101);
  for (AttentionConfig cfg : configs) {
    HostTensor out(dtype, attention_out_shape(shape)), lse(DType::f32, {shape[0], shape[2], shape[1]});
    run_forward(e, shape, qkv, out, lse, cfg);
    const AttentionReference ref = attention_reference(shape, qkv, {}, cfg);
    e.expect(config_name(cfg) + ": out", out, ref.out, tolerance_for(dtype));
    e.expect(config_name(cfg) + ": lse", lse, ref.lse, tolerance_for(DType::f32));
  }
}

// d_qkv is assigned: it starts as 77 everywhere, so nothing of that may survive.
void backward_case(OpEnv& e, DType dtype, const std::vector<int64_t>& shape,
                   const std::vector<AttentionConfig>& configs) {
  HostTensor qkv = make_qkv(dtype, shape, 201), d_out(dtype, attention_out_shape(shape));
  d_out.uniform(202);
  for (AttentionConfig cfg : configs) {
    HostTensor out(dtype, attention_out_shape(shape)), lse(DType::f32, {shape[0], shape[2], shape[1]});
    HostTensor d_qkv(dtype, qkv.shape());
    d_qkv.fill(77.0);
    run_forward(e, shape, qkv, out, lse, cfg);
    ops::attention_backward({e.at(d_qkv), e.at(d_out), e.at(qkv), e.at(out), e.at(lse), shape[2], cfg.causal,
                             cfg.dropout, kAttentionKey, kv_heads(shape), cfg.window},
                            e.stream());
    const AttentionReference ref = attention_reference(shape, qkv, d_out.values(), cfg);
    e.expect(config_name(cfg) + ": d_qkv", d_qkv, ref.d_qkv, tolerance_for(dtype));
  }
}

// Registers forward and backward over `shapes` x `configs`.
void register_pair(const std::vector<std::vector<int64_t>>& shapes, const std::vector<DType>& dtypes,
                   const std::vector<AttentionConfig>& configs, bool slow = false) {
  OpCase f = reference_case(
      "attention_forward", shapes, dtypes,
      [configs](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) { forward_case(e, dtype, shape, configs); },
      kForwardSlack, kForwardHardwareSlack);
  OpCase b = reference_case(
      "attention_backward", shapes, dtypes,
      [configs](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) { backward_case(e, dtype, shape, configs); },
      kBackwardSlack);
  f.slow_on_emulator = b.slow_on_emulator = slow;
  op_table().push_back(std::move(f));
  op_table().push_back(std::move(b));
}

const bool kRegistered = [] {
  // Sizes 1, 3, 17; head dims that are not multiples of 16; B*NH from 1 to 6, so the
  // CPU backward runs both as one task per head and split over rows; T = 70 and 130
  // span several 64-row blocks. Grouped-query: multi-query (NKV = 1), NKV = NH/2 and
  // NH/4, one task per kv head and split over rows. Every configuration of
  // kAttentionConfigs (dropout, windows 1, 4 and 70).
  // On CUDA, 16-bit heads this small run padded to 64 on the tensor-core path, which
  // the emulator runs slowly: there they are long cases, and the flash shapes below
  // cover that path by default.
  const std::vector<std::vector<int64_t>> small = {
      {1, 1, 1, 8},     {2, 17, 3, 5},     {1, 17, 1, 20}, {1, 3, 2, 16},   {3, 70, 1, 3},   {1, 130, 2, 12},
      {2, 17, 4, 5, 1}, {1, 130, 4, 6, 2}, {3, 9, 8, 4, 2}, {1, 70, 6, 3, 3}, {4, 5, 4, 4, 1}};
  register_pair(small, kF32, kAttentionConfigs);
  register_pair(small, {DType::bf16, DType::f16}, kAttentionConfigs, /*slow=*/true);
  register_pair({{1, 1000, 1, 8}}, kAllFloat, {{true, 0.0f}, {false, 0.25f}}, /*slow=*/true);
  // The tensor-core path at the head dims it is built for: T = 77 is a multiple of
  // neither tile (64 query rows, 64 or 32 key rows), 128 of both; grouped and
  // multi-query kv heads; 96 runs padded to 128.
  const std::vector<AttentionConfig> flash = {{true, 0.0f}, {false, 0.0f}, {true, 0.1f}};
  const std::vector<DType> half = {DType::bf16, DType::f16};
  register_pair({{1, 77, 2, 64}, {1, 128, 1, 128}, {1, 77, 4, 64, 1}, {2, 45, 1, 96}}, half, flash);
  // Sliding windows 1 (the diagonal), 5 (inside one tile), 33 and 70 (across tile
  // edges of 16, 32 and 64 rows) with T = 150, so early key tiles are skipped.
  const std::vector<AttentionConfig> windows = {{true, 0.0f, 1}, {true, 0.2f, 5}, {true, 0.0f, 33}, {true, 0.1f, 70}};
  register_pair({{1, 150, 4, 8, 2}}, kAllFloat, windows);
  register_pair({{1, 150, 2, 64, 1}}, half, windows);
  return true;
}();

}  // namespace
}  // namespace strata::test
