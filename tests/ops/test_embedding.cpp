// CPU-only op-table cases for embedding_forward / embedding_backward: finite
// differences and the bad-token / too-long-sequence errors. The reference cases, for
// every backend: tests/ops/cases/embedding.cpp. Shapes are {B, T, C, V, maxT};
// pos_offset is maxT - T, so the last positions of the table are used.
#include <catch2/catch.hpp>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {

namespace {

struct Dims {
  int64_t B, T, C, V, maxT, pos_offset;
};

Dims dims_of(const std::vector<int64_t>& s) { return {s[0], s[1], s[2], s[3], s[4], s[4] - s[1]}; }

void run_gradcheck(DType dtype, const std::vector<int64_t>& shape) {
  Dims d = dims_of(shape);
  HostTensor tokens(DType::i32, {d.B, d.T}), wte(dtype, {d.V, d.C}), wpe(dtype, {d.maxT, d.C});
  HostTensor out(dtype, {d.B, d.T, d.C}), w(DType::f32, {d.B, d.T, d.C});
  tokens.tokens(12, int32_t(d.V));
  wte.uniform(13);
  wpe.uniform(14);
  w.uniform(15);
  const std::vector<double> wv = w.values();
  auto loss = [&] {
    ops::embedding_forward({out.view(), tokens.view(), wte.view(), wpe.view(), d.pos_offset}, cpu().stream());
    return dot(out, wv);
  };
  HostTensor d_wte(dtype, {d.V, d.C}), d_wpe(dtype, {d.maxT, d.C});
  d_wte.fill(0);
  d_wpe.fill(0);
  ops::embedding_backward({d_wte.view(), d_wpe.view(), w.view(), tokens.view(), d.pos_offset}, cpu().stream());
  expect_gradient("d_wte", wte, loss, d_wte.values());
  expect_gradient("d_wpe", wpe, loss, d_wpe.values());
}

using Catch::Contains;
// The error names the op and the argument. (A macro: Catch matchers combined with
// && keep references to their operands, so they cannot be returned from a helper.)
#define EXPECT_ARG_ERROR(expr, arg) REQUIRE_THROWS_WITH(expr, Contains(kOp) && Contains(arg))

void run_errors(DType, const std::vector<int64_t>&) {
  Stream& s = cpu().stream();
  HostTensor tokens(DType::i32, {2, 5}), wte(DType::f32, {50, 8}), wpe(DType::f32, {6, 8});
  HostTensor out(DType::f32, {2, 5, 8});
  tokens.tokens(1, 50);
  out.fill(-7.0);
  const char* kOp = "embedding_forward";
  auto fwd = [&](TensorView o, TensorView tk, TensorView te, TensorView pe, int64_t off) {
    ops::embedding_forward({o, tk, te, pe, off}, s);
  };
  // A bad id names itself, its position [b, t] and V, and nothing is written.
  tokens.set(7, 70);
  REQUIRE_THROWS_WITH(fwd(out.view(), tokens.view(), wte.view(), wpe.view(), 0),
                      Contains(kOp) && Contains("tokens") && Contains("70") && Contains("[1, 2]") &&
                          Contains("V = 50"));
  CHECK(out.values() == std::vector<double>(80, -7.0));
  tokens.set(7, -1);
  REQUIRE_THROWS_WITH(fwd(out.view(), tokens.view(), wte.view(), wpe.view(), 0),
                      Contains(kOp) && Contains("-1") && Contains("[1, 2]"));
  tokens.set(7, 49);
  // Sequence past the position table: T = 5 from offset 2 needs 7 positions of 6.
  REQUIRE_THROWS_WITH(fwd(out.view(), tokens.view(), wte.view(), wpe.view(), 2),
                      Contains(kOp) && Contains("wpe") && Contains("[2, 7)"));
  EXPECT_ARG_ERROR(fwd(out.view(), tokens.view(), wte.view(), wpe.view(), -1), "wpe");
  CHECK(out.values() == std::vector<double>(80, -7.0));
  REQUIRE_NOTHROW(fwd(out.view(), tokens.view(), wte.view(), wpe.view(), 1));
  REQUIRE_NOTHROW(fwd(out.view(), tokens.view(), wte.view(), {}, 100));  // no wpe: offset unused

  HostTensor out_bad(DType::f32, {2, 5, 7}), wpe_bad(DType::f32, {6, 7}), wte_bf(DType::bf16, {50, 8});
  HostTensor tokens_f(DType::f32, {2, 5}), tokens_1d(DType::i32, {10}), empty(DType::i32, {0, 5});
  EXPECT_ARG_ERROR(fwd(out_bad.view(), tokens.view(), wte.view(), wpe.view(), 0), "out");
  EXPECT_ARG_ERROR(fwd(out.view(), tokens.view(), wte.view(), wpe_bad.view(), 0), "wpe");
  EXPECT_ARG_ERROR(fwd(out.view(), tokens.view(), wte_bf.view(), {}, 0), "out");
  EXPECT_ARG_ERROR(fwd(out.view(), tokens_f.view(), wte.view(), {}, 0), "tokens");
  EXPECT_ARG_ERROR(fwd(out.view(), tokens_1d.view(), wte.view(), {}, 0), "tokens");
  EXPECT_ARG_ERROR(fwd(out.view(), empty.view(), wte.view(), {}, 0), "tokens");
  EXPECT_ARG_ERROR(fwd(out.view(), tokens.view(), {}, {}, 0), "wte");

  kOp = "embedding_backward";
  HostTensor d_wte(DType::f32, {50, 8}), d_wpe(DType::f32, {6, 8}), d_out(DType::f32, {2, 5, 8});
  HostTensor d_wte_f16(DType::f16, {50, 8}), d_out_bf(DType::bf16, {2, 5, 8});
  d_wte.fill(3.0);
  auto bwd = [&](TensorView gte, TensorView gpe, TensorView go, TensorView tk, int64_t off) {
    ops::embedding_backward({gte, gpe, go, tk, off}, s);
  };
  tokens.set(3, 50);
  REQUIRE_THROWS_WITH(bwd(d_wte.view(), d_wpe.view(), d_out.view(), tokens.view(), 0),
                      Contains(kOp) && Contains("tokens") && Contains("50") && Contains("[0, 3]"));
  CHECK(d_wte.values() == std::vector<double>(400, 3.0));
  tokens.set(3, 0);
  EXPECT_ARG_ERROR(bwd(d_wte.view(), d_wpe.view(), d_out.view(), tokens.view(), 3), "d_wpe");
  EXPECT_ARG_ERROR(bwd(d_wte_f16.view(), {}, d_out_bf.view(), tokens.view(), 0), "d_wte");
  EXPECT_ARG_ERROR(bwd(d_wte.view(), {}, out_bad.view(), tokens.view(), 0), "d_wte");
  EXPECT_ARG_ERROR(bwd(d_wte.view(), {}, {}, tokens.view(), 0), "d_out");
  EXPECT_ARG_ERROR(bwd({}, {}, d_out.view(), tokens.view(), 0), "d_wte");
  REQUIRE_NOTHROW(bwd(d_wte.view(), d_wpe.view(), d_out.view(), tokens.view(), 1));
}

STRATA_OP_CASE({"embedding_backward", CaseKind::gradcheck, {{2, 3, 4, 5, 6}, {3, 1, 17, 2, 1}}, kF32, run_gradcheck});
STRATA_OP_CASE({"embedding_forward", CaseKind::errors, {{1}}, kF32, run_errors});

}  // namespace

}  // namespace strata::test
