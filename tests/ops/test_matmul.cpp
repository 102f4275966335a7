// CPU-only cases for matmul_forward / matmul_backward: finite differences, argument
// errors, the GELU epilogue against matmul then gelu_forward and thread-count
// independence, bitwise. Reference cases for every backend: tests/ops/cases/matmul.cpp.
// Shapes are {N, IC, OC}, or {B, T, IC, OC} (tests/ops/matmul_reference.h).
#include <tbb/global_control.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "matmul_reference.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {

namespace {

void run_gradcheck(DType dtype, const std::vector<int64_t>& shape) {
  MatmulDims d = matmul_dims(shape);
  MatmulOperands x(dtype, d, 31);
  HostTensor out(dtype, with_last(d.rows_shape, d.oc));
  HostTensor wts(DType::f32, with_last(d.rows_shape, d.oc));
  wts.uniform(41);
  const std::vector<double> w = wts.values();
  auto loss = [&] {
    ops::matmul_forward({out.view(), x.inp.view(), x.weight.view(), x.bias.view()}, cpu().stream());
    return dot(out, w);
  };
  HostTensor d_inp(dtype, with_last(d.rows_shape, d.ic)), d_weight(dtype, {d.oc, d.ic}), d_bias(dtype, {d.oc});
  d_weight.fill(0);
  d_bias.fill(0);
  ops::matmul_backward({d_inp.view(), d_weight.view(), d_bias.view(), wts.view(), x.inp.view(), x.weight.view()},
                       cpu().stream());
  expect_gradient("d_inp", x.inp, loss, d_inp.values());
  expect_gradient("d_weight", x.weight, loss, d_weight.values());
  expect_gradient("d_bias", x.bias, loss, d_bias.values());
}

using Catch::Contains;
// The error names the op and the argument. (A macro: Catch matchers combined with
// && keep references to their operands, so they cannot be returned from a helper.)
#define EXPECT_ARG_ERROR(expr, arg) REQUIRE_THROWS_WITH(expr, Contains(kOp) && Contains(arg))

void run_errors(DType, const std::vector<int64_t>&) {
  Stream& s = cpu().stream();
  HostTensor inp(DType::f32, {4, 8}), w(DType::f32, {5, 8}), b(DType::f32, {5}), out(DType::f32, {4, 5});
  HostTensor w_bad(DType::f32, {5, 7}), b_bad(DType::f32, {6}), out_bad(DType::f32, {3, 5});
  HostTensor inp_bf(DType::bf16, {4, 8}), w_bf(DType::bf16, {5, 8}), dw_f16(DType::f16, {5, 8});
  HostTensor empty(DType::f32, {0, 8});
  const char* kOp = "matmul_forward";
  auto fwd = [&](TensorView o, TensorView i, TensorView wt, TensorView bi) {
    ops::matmul_forward({o, i, wt, bi}, s);
  };
  EXPECT_ARG_ERROR(fwd(out.view(), inp.view(), w_bad.view(), {}), "inp");
  EXPECT_ARG_ERROR(fwd(out_bad.view(), inp.view(), w.view(), {}), "out");
  EXPECT_ARG_ERROR(fwd(out.view(), inp.view(), w.view(), b_bad.view()), "bias");
  EXPECT_ARG_ERROR(fwd(out.view(), inp_bf.view(), w.view(), {}), "inp");
  EXPECT_ARG_ERROR(fwd(out.view(), {}, w.view(), {}), "inp");
  EXPECT_ARG_ERROR(fwd(out.view(), inp.view(), {}, {}), "weight");
  EXPECT_ARG_ERROR(fwd(out.view(), empty.view(), w.view(), {}), "inp");
  const TensorView out_on_inp(inp.view().data, DType::f32, {4, 5}, &cpu());
  REQUIRE_THROWS_WITH(fwd(out_on_inp, inp.view(), w.view(), {}), Contains(kOp) && Contains("overlaps"));
  EXPECT_ARG_ERROR(fwd(out.view(), inp.view(), w.view().reshape({40}), {}), "weight");
  REQUIRE_NOTHROW(fwd(out.view(), inp.view(), w.view(), b.view()));
  HostTensor pre(DType::f32, {4, 5}), pre_bf(DType::bf16, {4, 5});
  auto fwd_gelu = [&](TensorView p) { ops::matmul_forward({out.view(), inp.view(), w.view(), b.view(), p}, s); };
  EXPECT_ARG_ERROR(fwd_gelu(out_bad.view()), "gelu_pre");
  EXPECT_ARG_ERROR(fwd_gelu(pre_bf.view()), "gelu_pre");
  EXPECT_ARG_ERROR(fwd_gelu(out.view()), "gelu_pre");  // must not be out itself
  EXPECT_ARG_ERROR(fwd_gelu(TensorView(inp.view().data, DType::f32, {4, 5}, &cpu())), "gelu_pre");
  REQUIRE_NOTHROW(fwd_gelu(pre.view()));

  HostTensor d_out(DType::f32, {4, 5}), d_inp(DType::f32, {4, 8}), dw(DType::f32, {5, 8}), db(DType::f32, {5});
  kOp = "matmul_backward";
  auto bwd = [&](TensorView di, TensorView dwt, TensorView dbi, TensorView go, TensorView i, TensorView wt) {
    ops::matmul_backward({di, dwt, dbi, go, i, wt}, s);
  };
  EXPECT_ARG_ERROR(bwd(d_inp.view(), dw.view(), db.view(), out_bad.view(), inp.view(), w.view()), "d_out");
  EXPECT_ARG_ERROR(bwd(d_out.view(), dw.view(), db.view(), d_out.view(), inp.view(), w.view()), "d_inp");
  EXPECT_ARG_ERROR(bwd(d_inp.view(), w_bad.view(), db.view(), d_out.view(), inp.view(), w.view()), "d_weight");
  EXPECT_ARG_ERROR(bwd(d_inp.view(), dw.view(), b_bad.view(), d_out.view(), inp.view(), w.view()), "d_bias");
  EXPECT_ARG_ERROR(bwd(d_inp.view(), dw.view(), db.view(), {}, inp.view(), w.view()), "d_out");
  EXPECT_ARG_ERROR(bwd(d_inp.view(), dw.view(), db.view(), d_out.view(), empty.view(), w.view()), "inp");
  // a 16-bit weight takes gradients of its own dtype or f32, nothing else
  HostTensor d_out_bf(DType::bf16, {4, 5});
  EXPECT_ARG_ERROR(bwd({}, dw_f16.view(), {}, d_out_bf.view(), inp_bf.view(), w_bf.view()), "d_weight");
  EXPECT_ARG_ERROR(bwd({}, {}, {}, d_out.view(), inp_bf.view(), w_bf.view()), "d_out");
}

STRATA_OP_CASE({"matmul_backward", CaseKind::gradcheck, {{3, 5, 4}, {2, 3, 17, 6}}, kF32, run_gradcheck});
STRATA_OP_CASE({"matmul_forward", CaseKind::errors, {{1}}, kF32, run_errors});

// On CPU the epilogue GELUs the stored pre-activation with gelu_forward's function:
// bitwise matmul_forward then gelu_forward, so selective recompute could replay it.
TEST_CASE("matmul GELU epilogue equals matmul then gelu_forward bitwise", "[matmul]") {
  for (DType dtype : kAllFloat) {
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{1, 1, 1}, {3, 17, 5}, {17, 3, 1000}, {2, 150, 33, 70}, {300, 64, 130}}) {
      INFO("dtype " << dtype_name(dtype) << " shape " << shape_str(shape));
      const MatmulDims d = matmul_dims(shape);
      MatmulOperands x(dtype, d, 17);
      const std::vector<int64_t> out_shape = with_last(d.rows_shape, d.oc);
      HostTensor out(dtype, out_shape), pre(dtype, out_shape), plain_pre(dtype, out_shape), plain(dtype, out_shape);
      Stream& s = cpu().stream();
      ops::matmul_forward({out.view(), x.inp.view(), x.weight.view(), x.bias.view(), pre.view()}, s);
      ops::matmul_forward({plain_pre.view(), x.inp.view(), x.weight.view(), x.bias.view()}, s);
      ops::gelu_forward({plain.view(), plain_pre.view()}, s);
      CHECK(std::memcmp(pre.view().data, plain_pre.view().data, pre.view().nbytes()) == 0);
      CHECK(std::memcmp(out.view().data, plain.view().data, out.view().nbytes()) == 0);
    }
  }
}

// Every output of one forward + backward, as raw bytes.
std::vector<uint8_t> run_all(DType dtype, const MatmulDims& d) {
  MatmulOperands x(dtype, d, 51);
  HostTensor out(dtype, with_last(d.rows_shape, d.oc)), d_out(dtype, with_last(d.rows_shape, d.oc));
  HostTensor d_inp(dtype, with_last(d.rows_shape, d.ic)), d_weight(dtype, {d.oc, d.ic}), d_bias(dtype, {d.oc});
  HostTensor d_weight_f32(DType::f32, {d.oc, d.ic});
  d_out.uniform(52);
  d_weight.uniform(53);
  d_weight_f32.uniform(54);
  d_bias.uniform(55);
  Stream& s = cpu().stream();
  ops::matmul_forward({out.view(), x.inp.view(), x.weight.view(), x.bias.view()}, s);
  ops::matmul_backward({d_inp.view(), d_weight.view(), d_bias.view(), d_out.view(), x.inp.view(), x.weight.view()},
                       s);
  ops::matmul_backward({{}, d_weight_f32.view(), {}, d_out.view(), x.inp.view(), x.weight.view()}, s);
  std::vector<uint8_t> bytes;
  for (const HostTensor* t : {&out, &d_inp, &d_weight, &d_bias, &d_weight_f32}) {
    const TensorView v = t->view();
    const uint8_t* p = static_cast<const uint8_t*>(v.data);
    bytes.insert(bytes.end(), p, p + v.nbytes());
  }
  return bytes;
}

TEST_CASE("matmul results do not depend on the thread count", "[matmul]") {
  for (DType dtype : kAllFloat) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1000, 300, 260}, {2048, 256, 768}}) {
      INFO("dtype " << dtype_name(dtype) << " N " << shape[0]);
      const MatmulDims d = matmul_dims(shape);
      const std::vector<uint8_t> many = run_all(dtype, d);
      std::vector<uint8_t> one;
      {
        tbb::global_control single(tbb::global_control::max_allowed_parallelism, 1);
        one = run_all(dtype, d);
      }
      CHECK(many.size() == one.size());
      CHECK(std::memcmp(many.data(), one.data(), many.size()) == 0);
    }
  }
}

}  // namespace

}  // namespace strata::test
