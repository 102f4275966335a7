// Op-table cases for attention_forward / attention_backward: a naive double
// reference (full T x T softmax, the dropout mask regenerated from philox_uniform),
// causal and bidirectional, with and without dropout, causal with sliding windows
// (1, narrower and wider than the CPU's 64-row blocks); finite differences of d_qkv;
// argument errors. Shapes are {B, T, NH, HD} (multi-head) or {B, T, NH, HD, NKV}
// (grouped-query: NKV kv heads, NKV = 1 multi-query).
// Invariant: expected values come from the reference below, never from the op.
#include <catch2/catch.hpp>
#include <cmath>

#include "common/philox.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

struct Config {
  bool causal;
  float dropout;
  int64_t window = 0;  // sliding window: row i sees keys (i - window, i]; 0 = none
};
const std::vector<Config> kConfigs = {{true, 0.0f},     {false, 0.0f},     {true, 0.3f},    {false, 0.25f},
                                      {true, 0.0f, 1}, {true, 0.3f, 4}, {true, 0.0f, 70}};
const num::RandomKey kKey{0xabcdef12345ull, 7, 3};

struct AttentionReference {
  std::vector<double> out, lse, d_qkv;  // (B, T, NH, HD), (B, NH, T), (B, T, (NH + 2*NKV)*HD)
};

int64_t kv_heads(const std::vector<int64_t>& shape) { return shape.size() > 4 ? shape[4] : shape[2]; }

// Exact attention of the stored qkv; d_out may be empty to skip the gradients.
AttentionReference attention_reference(const std::vector<int64_t>& shape, const HostTensor& qkv_t,
                                        const std::vector<double>& d_out, Config cfg) {
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
          bool keep = cfg.dropout == 0.0f || num::philox_uniform(kKey, index) >= cfg.dropout;
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

struct AttentionRun {
  HostTensor out, lse;
};

std::vector<int64_t> out_shape(const std::vector<int64_t>& shape) { return {shape[0], shape[1], shape[2], shape[3]}; }

AttentionRun run_forward(const std::vector<int64_t>& shape, const HostTensor& qkv, Config cfg) {
  AttentionRun r{HostTensor(qkv.dtype(), out_shape(shape)), HostTensor(DType::f32, {shape[0], shape[2], shape[1]})};
  ops::attention_forward(
      {r.out.view(), r.lse.view(), qkv.view(), shape[2], cfg.causal, cfg.dropout, kKey, kv_heads(shape), cfg.window},
      cpu().stream());
  return r;
}

HostTensor run_backward(const std::vector<int64_t>& shape, const HostTensor& qkv, const AttentionRun& fwd,
                        const HostTensor& d_out, Config cfg) {
  HostTensor d_qkv(qkv.dtype(), qkv.shape());
  d_qkv.fill(77.0);  // assigned, so nothing of this may survive
  ops::attention_backward({d_qkv.view(), d_out.view(), qkv.view(), fwd.out.view(), fwd.lse.view(), shape[2],
                           cfg.causal, cfg.dropout, kKey, kv_heads(shape), cfg.window},
                          cpu().stream());
  return d_qkv;
}

std::string config_name(Config cfg) {
  return std::string(cfg.causal ? "causal" : "bidirectional") + " dropout " + std::to_string(cfg.dropout) +
         " window " + std::to_string(cfg.window);
}

HostTensor make_qkv(DType dtype, const std::vector<int64_t>& shape, uint64_t seed) {
  HostTensor qkv(dtype, {shape[0], shape[1], (shape[2] + 2 * kv_heads(shape)) * shape[3]});
  qkv.uniform(seed, -1.5, 1.5);
  return qkv;
}

// Sizes 1, 3, 17 and 1000; head dims that are not multiples of 16; B*NH from 1 to
// 6, so the backward runs both as one task per head and split over rows; T = 70
// and 130 span several 64-row blocks. Grouped-query shapes: multi-query (NKV = 1),
// NKV = NH/2 and NH/4, one task per kv head (B*NKV large) and split over rows.
const std::vector<std::vector<int64_t>> kShapes = {
    {1, 1, 1, 8},     {2, 17, 3, 5},     {1, 17, 1, 20},   {1, 3, 2, 16},    {3, 70, 1, 3},
    {1, 130, 2, 12},  {1, 1000, 1, 8},   {2, 17, 4, 5, 1}, {1, 130, 4, 6, 2}, {3, 9, 8, 4, 2},
    {1, 70, 6, 3, 3}, {4, 5, 4, 4, 1}};

STRATA_OP_CASE({"attention_forward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  HostTensor qkv = make_qkv(dtype, shape, 101);
                  for (Config cfg : kConfigs) {
                    INFO(config_name(cfg));
                    AttentionRun r = run_forward(shape, qkv, cfg);
                    AttentionReference ref = attention_reference(shape, qkv, {}, cfg);
                    expect_close("out", r.out, ref.out, tolerance_for(dtype));
                    expect_close("lse", r.lse, ref.lse, tolerance_for(DType::f32));
                  }
                }});

STRATA_OP_CASE({"attention_backward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  HostTensor qkv = make_qkv(dtype, shape, 201);
                  HostTensor d_out(dtype, out_shape(shape));
                  d_out.uniform(202);
                  for (Config cfg : kConfigs) {
                    INFO(config_name(cfg));
                    AttentionRun fwd = run_forward(shape, qkv, cfg);
                    HostTensor d_qkv = run_backward(shape, qkv, fwd, d_out, cfg);
                    AttentionReference ref = attention_reference(shape, qkv, d_out.values(), cfg);
                    expect_close("d_qkv", d_qkv, ref.d_qkv, tolerance_for(dtype));
                  }
                }});

// L = dot(out, w): backward with d_out = w must match central differences of L.
STRATA_OP_CASE({"attention_backward", CaseKind::gradcheck,
                {{1, 17, 1, 4}, {2, 6, 2, 3}, {1, 1, 1, 2}, {1, 7, 4, 3, 1}, {2, 6, 4, 2, 2}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  HostTensor qkv = make_qkv(dtype, shape, 301);
                  HostTensor w(dtype, out_shape(shape));
                  w.uniform(302);
                  const std::vector<double> weights = w.values();
                  for (Config cfg : kConfigs) {
                    INFO(config_name(cfg));
                    AttentionRun fwd = run_forward(shape, qkv, cfg);
                    HostTensor d_qkv = run_backward(shape, qkv, fwd, w, cfg);
                    auto loss = [&] { return dot(run_forward(shape, qkv, cfg).out, weights); };
                    expect_gradient("d_qkv", qkv, loss, d_qkv.values());
                  }
                }});

using Catch::Contains;

STRATA_OP_CASE({"attention_forward", CaseKind::errors, {{2, 5, 2, 4}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t B = shape[0], T = shape[1], NH = shape[2], HD = shape[3];
                  HostTensor qkv = make_qkv(dtype, shape, 401), out(dtype, shape), lse(DType::f32, {B, NH, T});
                  HostTensor odd(dtype, {B, T, 3 * NH * HD + 2}), lse_bad(DType::f32, {B, T, NH});
                  HostTensor lse_bf16(DType::bf16, {B, NH, T}), out_bf16(DType::bf16, shape);
                  HostTensor qkv_i32(DType::i32, qkv.shape()), empty(dtype, {B, 0, 3 * NH * HD});
                  Stream& s = cpu().stream();
                  auto fwd = [&](ops::AttentionForwardArgs a) { ops::attention_forward(a, s); };
                  ops::AttentionForwardArgs ok{out.view(), lse.view(), qkv.view(), NH};
                  REQUIRE_NOTHROW(fwd(ok));
                  auto expect = [&](ops::AttentionForwardArgs a, const char* arg) {
                    REQUIRE_THROWS_WITH(fwd(a), Contains("attention_forward") && Contains(arg));
                  };
                  auto a = ok;
                  a.qkv = TensorView();
                  expect(a, "qkv");
                  a = ok;
                  a.qkv = odd.view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("attention_forward") && Contains("qkv") &&
                                                  Contains("not divisible by n_heads + 2*n_kv_heads = 6"));
                  a = ok;
                  a.qkv = qkv_i32.view();
                  expect(a, "qkv");
                  a = ok;
                  a.qkv = empty.view();
                  expect(a, "qkv");
                  a = ok;
                  a.qkv = qkv.view().reshape({B * T, 3 * NH * HD});
                  expect(a, "qkv");
                  a = ok;
                  a.n_heads = 0;
                  expect(a, "n_heads");
                  a = ok;
                  a.n_heads = 4;  // divides 24 but then out has the wrong shape
                  expect(a, "out");
                  for (int64_t nkv : {3, -1}) {  // must divide n_heads = 2
                    a = ok;
                    a.n_kv_heads = nkv;
                    REQUIRE_THROWS_WITH(fwd(a), Contains("attention_forward") && Contains("n_kv_heads") &&
                                                    Contains("must divide n_heads = 2"));
                  }
                  a = ok;
                  a.n_kv_heads = 1;  // valid, but qkv is the multi-head width 24, not (2 + 2) * HD
                  expect(a, "out");
                  a = ok;
                  a.lse = lse_bad.view();
                  expect(a, "lse");
                  a = ok;
                  a.lse = lse_bf16.view();
                  expect(a, "lse");
                  a = ok;
                  a.out = out_bf16.view();
                  expect(a, "out");
                  a = ok;
                  a.out = out.view().reshape({B, T, NH * HD});
                  expect(a, "out");
                  for (float p : {1.0f, -0.1f, NAN}) {
                    a = ok;
                    a.dropout = p;
                    expect(a, "dropout");
                  }
                  a = ok;
                  a.window = -1;
                  REQUIRE_THROWS_WITH(fwd(a), Contains("attention_forward") && Contains("window") &&
                                                  Contains("must be >= 0"));
                  a = ok;
                  a.window = 3, a.causal = false;
                  REQUIRE_THROWS_WITH(fwd(a), Contains("attention_forward") && Contains("window") &&
                                                  Contains("needs causal attention"));
                }});

STRATA_OP_CASE({"attention_backward", CaseKind::errors, {{2, 5, 2, 4}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t B = shape[0], T = shape[1], NH = shape[2];
                  HostTensor qkv = make_qkv(dtype, shape, 501), out(dtype, shape), lse(DType::f32, {B, NH, T});
                  HostTensor d_qkv(dtype, qkv.shape()), d_out(dtype, shape), d_out_bf16(DType::bf16, shape);
                  HostTensor lse_bad(DType::f32, {B, NH, T + 1}), d_qkv_bad(dtype, {B, T + 1, qkv.shape()[2]});
                  Stream& s = cpu().stream();
                  auto bwd = [&](ops::AttentionBackwardArgs a) { ops::attention_backward(a, s); };
                  ops::AttentionBackwardArgs ok{d_qkv.view(), d_out.view(), qkv.view(), out.view(), lse.view(), NH};
                  REQUIRE_NOTHROW(bwd(ok));
                  auto expect = [&](ops::AttentionBackwardArgs a, const char* arg) {
                    REQUIRE_THROWS_WITH(bwd(a), Contains("attention_backward") && Contains(arg));
                  };
                  auto a = ok;
                  a.d_out = TensorView();
                  expect(a, "d_out");
                  a = ok;
                  a.d_out = d_out_bf16.view();
                  expect(a, "d_out");
                  a = ok;
                  a.d_out = qkv.view().reshape({B, T, NH, qkv.shape()[2] / NH});
                  expect(a, "d_out");
                  a = ok;
                  a.out = TensorView();
                  expect(a, "out");
                  a = ok;
                  a.d_qkv = d_qkv_bad.view();
                  expect(a, "d_qkv");
                  a = ok;
                  a.d_qkv = qkv.view();
                  expect(a, "d_qkv");
                  a = ok;
                  a.lse = lse_bad.view();
                  expect(a, "lse");
                  a = ok;
                  a.n_heads = 3;
                  expect(a, "qkv");
                  a = ok;
                  a.dropout = 1.5f;
                  expect(a, "dropout");
                  a = ok;
                  a.window = 2, a.causal = false;
                  expect(a, "window");
                }});

}  // namespace
}  // namespace strata::test
