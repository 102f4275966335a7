// Attention's double-precision reference and case inputs, shared by the reference
// cases for every backend (tests/ops/cases/attention.cpp) and the CPU-only tests
// (tests/ops/test_attention.cpp): a naive full T x T softmax, the dropout mask
// regenerated from philox_uniform. Shapes are {B, T, NH, HD} (multi-head) or
// {B, T, NH, HD, NKV} (grouped-query: NKV kv heads, NKV = 1 multi-query).
// Invariant: expected values come from this reference, never from the op.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "common/philox.h"
#include "support/host_tensor.h"

namespace strata::test {

struct AttentionConfig {
  bool causal;
  float dropout;
  int64_t window = 0;  // sliding window: row i sees keys (i - window, i]; 0 = none
};
inline const std::vector<AttentionConfig> kAttentionConfigs = {{true, 0.0f},     {false, 0.0f},     {true, 0.3f},    {false, 0.25f},
                                      {true, 0.0f, 1}, {true, 0.3f, 4}, {true, 0.0f, 70}};
inline const num::RandomKey kAttentionKey{0xabcdef12345ull, 7, 3};

struct AttentionReference {
  std::vector<double> out, lse, d_qkv;  // (B, T, NH, HD), (B, NH, T), (B, T, (NH + 2*NKV)*HD)
};

inline int64_t kv_heads(const std::vector<int64_t>& shape) { return shape.size() > 4 ? shape[4] : shape[2]; }

// Exact attention of the stored qkv; d_out may be empty to skip the gradients.
inline AttentionReference attention_reference(const std::vector<int64_t>& shape, const HostTensor& qkv_t,
                                        const std::vector<double>& d_out, AttentionConfig cfg) {
  const int64_t B = shape[0], T = shape[1], NH = shape[2], HD = shape[3], C = NH * HD;
  const int64_t NKV = kv_heads(shape), W = (NH + 2 * NKV) * HD, group = NH / NKV;
  const std::vector<double> qkv = qkv_t.values();
  const double scale = 1.0 / std::sqrt(double(HD));
  AttentionReference ref{std::vector<double>(size_t(B * T * C)), std::vector<double>(size_t(B * NH * T)),
                         std::vector<double>(size_t(B * T * W), 0.0)};
  // part 0: query head h; parts 1, 2: the k and v of the kv head query head h reads.
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h) {
    const int64_t head = part == 0 ? h : part == 1 ? NH + h / group : NH + NKV + h / group;
    return size_t((b * T + t) * W + head * HD);
  };
  const size_t rows = static_cast<size_t>(T);
  std::vector<double> p(rows), f(rows), dp(rows);  // one row of P, F and dP
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const int64_t n = cfg.causal ? i + 1 : T;
        const int64_t first = cfg.window > 0 ? std::max<int64_t>(0, i - cfg.window + 1) : 0;  // keys [first, n)
        const double* q = &qkv[at(b, i, 0, h)];
        double m = -INFINITY;
        for (int64_t j = first; j < n; ++j) {
          double s = 0;
          for (int64_t d = 0; d < HD; ++d) s += q[d] * qkv[at(b, j, 1, h) + size_t(d)];
          p[size_t(j)] = s * scale;
          m = std::max(m, p[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = first; j < n; ++j) sum += std::exp(p[size_t(j)] - m);
        const double lse = m + std::log(sum);
        ref.lse[size_t((b * NH + h) * T + i)] = lse;
        for (int64_t j = first; j < n; ++j) {
          p[size_t(j)] = std::exp(p[size_t(j)] - lse);
          uint64_t index = uint64_t(((b * NH + h) * T + i) * T + j);
          bool keep = cfg.dropout == 0.0f || num::philox_uniform(kAttentionKey, index) >= cfg.dropout;
          f[size_t(j)] = keep ? 1.0 / (1.0 - double(cfg.dropout)) : 0.0;
        }
        double* o = &ref.out[size_t((b * T + i) * C + h * HD)];
        for (int64_t j = first; j < n; ++j)
          for (int64_t d = 0; d < HD; ++d) o[d] += p[size_t(j)] * f[size_t(j)] * qkv[at(b, j, 2, h) + size_t(d)];
        if (d_out.empty()) continue;
        // dP = (dO V^T) o F;  dS = P o (dP - sum_j P dP);  dQ = scale dS K; dK = scale dS^T Q; dV = (P o F)^T dO.
        const double* g = &d_out[size_t((b * T + i) * C + h * HD)];
        double D = 0;
        for (int64_t j = first; j < n; ++j) {
          double s = 0;
          for (int64_t d = 0; d < HD; ++d) s += g[d] * qkv[at(b, j, 2, h) + size_t(d)];
          dp[size_t(j)] = s * f[size_t(j)];
          D += p[size_t(j)] * dp[size_t(j)];
        }
        for (int64_t j = first; j < n; ++j) {
          double ds = p[size_t(j)] * (dp[size_t(j)] - D) * scale;
          for (int64_t d = 0; d < HD; ++d) {
            ref.d_qkv[at(b, i, 0, h) + size_t(d)] += ds * qkv[at(b, j, 1, h) + size_t(d)];
            ref.d_qkv[at(b, j, 1, h) + size_t(d)] += ds * q[d];
            ref.d_qkv[at(b, j, 2, h) + size_t(d)] += p[size_t(j)] * f[size_t(j)] * g[d];
          }
        }
      }
  return ref;
}

inline std::vector<int64_t> attention_out_shape(const std::vector<int64_t>& shape) { return {shape[0], shape[1], shape[2], shape[3]}; }

inline std::string config_name(AttentionConfig cfg) {
  return std::string(cfg.causal ? "causal" : "bidirectional") + " dropout " + std::to_string(cfg.dropout) +
         " window " + std::to_string(cfg.window);
}

inline HostTensor make_qkv(DType dtype, const std::vector<int64_t>& shape, uint64_t seed) {
  HostTensor qkv(dtype, {shape[0], shape[1], (shape[2] + 2 * kv_heads(shape)) * shape[3]});
  qkv.uniform(seed, -1.5, 1.5);
  return qkv;
}

}  // namespace strata::test
