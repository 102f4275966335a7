// CPU-only cases for attention_forward / attention_backward: finite differences of
// d_qkv over every configuration (causal and bidirectional, dropout, sliding windows)
// and argument errors. Reference cases for every backend: tests/ops/cases/attention.cpp.
// Shapes are {B, T, NH, HD} or {B, T, NH, HD, NKV} (tests/ops/attention_reference.h).
#include <catch2/catch.hpp>
#include <cmath>

#include "attention_reference.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

struct AttentionRun {
  HostTensor out, lse;
};

AttentionRun run_forward(const std::vector<int64_t>& shape, const HostTensor& qkv, AttentionConfig cfg) {
  AttentionRun r{HostTensor(qkv.dtype(), attention_out_shape(shape)), HostTensor(DType::f32, {shape[0], shape[2], shape[1]})};
  ops::attention_forward(
      {r.out.view(), r.lse.view(), qkv.view(), shape[2], cfg.causal, cfg.dropout, kAttentionKey, kv_heads(shape), cfg.window},
      cpu().stream());
  return r;
}

HostTensor run_backward(const std::vector<int64_t>& shape, const HostTensor& qkv, const AttentionRun& fwd,
                        const HostTensor& d_out, AttentionConfig cfg) {
  HostTensor d_qkv(qkv.dtype(), qkv.shape());
  d_qkv.fill(77.0);  // assigned, so nothing of this may survive
  ops::attention_backward({d_qkv.view(), d_out.view(), qkv.view(), fwd.out.view(), fwd.lse.view(), shape[2],
                           cfg.causal, cfg.dropout, kAttentionKey, kv_heads(shape), cfg.window},
                          cpu().stream());
  return d_qkv;
}

// L = dot(out, w): backward with d_out = w must match central differences of L.
STRATA_OP_CASE({"attention_backward", CaseKind::gradcheck,
                {{1, 17, 1, 4}, {2, 6, 2, 3}, {1, 1, 1, 2}, {1, 7, 4, 3, 1}, {2, 6, 4, 2, 2}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  HostTensor qkv = make_qkv(dtype, shape, 301);
                  HostTensor w(dtype, attention_out_shape(shape));
                  w.uniform(302);
                  const std::vector<double> weights = w.values();
                  for (AttentionConfig cfg : kAttentionConfigs) {
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
