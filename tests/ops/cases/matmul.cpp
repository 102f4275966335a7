// Reference cases for matmul_forward / matmul_backward, for every backend: a double
// matmul of the stored inputs, with and without bias, the GELU epilogue, every subset
// of the gradients (accumulated into non-zero d_weight / d_bias of the weight's dtype
// and of f32), and the padded-vocabulary row stride. Shapes: tests/ops/matmul_reference.h.
// Finite differences, argument errors, epilogue-vs-gelu_forward and thread-count
// bitwise tests: tests/ops/test_matmul.cpp.
#include "ops.h"
#include "ops/activation_reference.h"
#include "ops/matmul_reference.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

// Sizes around the CPU GEMM tiles' edges (14 rows, 32 columns, K blocks of 512 for f32
// and 1024 for bf16, odd K for the bf16 pairs: 1101 ends on an odd block), with
// several tiles per output in both directions.
const std::vector<std::vector<int64_t>> kShapes = {
    {1, 1, 1},    {3, 17, 5},    {17, 3, 1000},    {1000, 17, 3},  {2, 1000, 17},   {33, 1000, 33},
    {3, 1101, 5}, {1101, 9, 33}, {2, 150, 33, 70}, {300, 64, 130}, {1000, 33, 300}};
const std::vector<std::vector<int64_t>> kGeluShapes = {{1, 1, 1}, {3, 17, 5}, {17, 3, 1000}, {2, 150, 33, 70},
                                                       {300, 64, 130}};

// The backends sum K in other orders (cuBLASLt splits K; the tiled kernel sums by tile).
constexpr double kSumSlack = 2.0;
// Hardware also applies GELU before rounding gelu_pre (kernels/ops.h).
constexpr double kGeluHardwareSlack = 4.0;

STRATA_OP_CASE(reference_case(
    "matmul_forward", kShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const MatmulDims d = matmul_dims(shape);
      for (bool with_bias : {false, true}) {
        MatmulOperands x(dtype, d, 11);
        HostTensor out(dtype, with_last(d.rows_shape, d.oc));
        ops::matmul_forward({e.at(out), e.at(x.inp), e.at(x.weight), with_bias ? e.at(x.bias) : TensorView{}},
                            e.stream());
        const std::vector<double> bias = x.bias.values();
        e.expect(with_bias ? "out (bias)" : "out", out,
                 matmul_reference(d, x.inp.values(), x.weight.values(), with_bias ? &bias : nullptr),
                 tolerance_for(dtype));
      }
    },
    kSumSlack));

// The GELU epilogue: gelu_pre against the plain reference, out against GELU of it.
STRATA_OP_CASE(reference_case(
    "matmul_forward", kGeluShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const MatmulDims d = matmul_dims(shape);
      for (bool with_bias : {false, true}) {
        MatmulOperands x(dtype, d, 13);
        HostTensor out(dtype, with_last(d.rows_shape, d.oc)), pre(dtype, with_last(d.rows_shape, d.oc));
        ops::matmul_forward({e.at(out), e.at(x.inp), e.at(x.weight), with_bias ? e.at(x.bias) : TensorView{},
                             e.at(pre)},
                            e.stream());
        const std::vector<double> bias = x.bias.values();
        std::vector<double> ref = matmul_reference(d, x.inp.values(), x.weight.values(), with_bias ? &bias : nullptr);
        const std::string what = with_bias ? "GELU epilogue (bias) " : "GELU epilogue ";
        e.expect(what + "gelu_pre", pre, ref, tolerance_for(dtype));
        for (double& v : ref) v = reference::gelu(v);
        e.expect(what + "out", out, ref, tolerance_for(dtype));
      }
    },
    kSumSlack, kGeluHardwareSlack));

// One backward in double from d_out, whose rows have stride `stride` >= OC (only
// columns [0, OC) read): d_inp assigned, d_weight and d_bias (if any) added to.
struct MatmulGrads {
  std::vector<double> d_inp, d_weight, d_bias;
};
MatmulGrads backward_reference(const MatmulDims& d, const MatmulOperands& x, const HostTensor& d_out, int64_t stride,
                               std::vector<double> d_weight, std::vector<double> d_bias) {
  const std::vector<double> go = d_out.values(), xi = x.inp.values(), w = x.weight.values();
  MatmulGrads g{std::vector<double>(size_t(d.n * d.ic), 0.0), std::move(d_weight), std::move(d_bias)};
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t o = 0; o < d.oc; ++o) {
      const double gv = go[size_t(n * stride + o)];
      if (!g.d_bias.empty()) g.d_bias[size_t(o)] += gv;
      for (int64_t i = 0; i < d.ic; ++i) {
        g.d_inp[size_t(n * d.ic + i)] += gv * w[size_t(o * d.ic + i)];
        g.d_weight[size_t(o * d.ic + i)] += gv * xi[size_t(n * d.ic + i)];
      }
    }
  return g;
}

// Which gradients one backward call asks for, and in which dtype.
struct GradSet {
  bool d_inp, d_weight, d_bias, f32_params;
};

std::string grad_set_name(const GradSet& g) {
  std::string s;
  if (g.d_inp) s += "d_inp ";
  if (g.d_weight) s += "d_weight ";
  if (g.d_bias) s += "d_bias ";
  return s + (g.f32_params ? "(f32 params): " : ": ");
}

STRATA_OP_CASE(reference_case(
    "matmul_backward", kShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const MatmulDims d = matmul_dims(shape);
      const GradSet sets[] = {{true, true, true, false}, {false, true, true, true}, {true, false, false, false},
                              {false, false, true, false}};
      for (const GradSet& g : sets) {
        const std::string what = grad_set_name(g);
        MatmulOperands x(dtype, d, 23);
        const DType pdt = g.f32_params ? DType::f32 : dtype;
        HostTensor d_out(dtype, with_last(d.rows_shape, d.oc)), d_inp(dtype, with_last(d.rows_shape, d.ic));
        HostTensor d_weight(pdt, {d.oc, d.ic}), d_bias(pdt, {d.oc});
        d_out.uniform(5);
        d_inp.fill(123.0);    // assigned, or left alone when not asked for
        d_weight.uniform(6);  // accumulated into
        d_bias.uniform(7);
        MatmulGrads ref = backward_reference(d, x, d_out, d.oc, d_weight.values(), d_bias.values());
        if (!g.d_inp) ref.d_inp.assign(ref.d_inp.size(), 123.0);
        if (!g.d_weight) ref.d_weight = d_weight.values();
        if (!g.d_bias) ref.d_bias = d_bias.values();
        // Every gradient on the device, asked for or not: one not asked for stays as it was.
        const TensorView di = e.at(d_inp), dw = e.at(d_weight), db = e.at(d_bias);
        ops::matmul_backward({g.d_inp ? di : TensorView{}, g.d_weight ? dw : TensorView{}, g.d_bias ? db : TensorView{},
                              e.at(d_out), e.at(x.inp), e.at(x.weight)},
                             e.stream());
        e.expect(what + "d_inp", d_inp, ref.d_inp, tolerance_for(dtype));
        e.expect(what + "d_weight", d_weight, ref.d_weight, tolerance_for(pdt));
        e.expect(what + "d_bias", d_bias, ref.d_bias, tolerance_for(pdt));
      }
    },
    kSumSlack));

// The padded-vocabulary head: out / d_out with a row stride OCp past OC, a multiple
// of 64. Forward leaves out's padding as it was; backward reads none of d_out's (NaN).
STRATA_OP_CASE(reference_case(
    "matmul_backward", {{1, 1, 1}, {3, 17, 5}, {24, 40, 100}, {2, 5, 33, 70}}, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const MatmulDims d = matmul_dims(shape);
      const int64_t ocp = (d.oc + 63) / 64 * 64;
      MatmulOperands x(dtype, d, 29);
      HostTensor out(dtype, with_last(d.rows_shape, ocp)), d_out(dtype, with_last(d.rows_shape, ocp));
      HostTensor d_inp(dtype, with_last(d.rows_shape, d.ic)), d_weight(DType::f32, {d.oc, d.ic});
      out.fill(7.0);
      d_out.uniform(30);
      d_weight.uniform(31);
      std::vector<double> ref_out = out.values();
      const std::vector<double> plain = matmul_reference(d, x.inp.values(), x.weight.values(), nullptr);
      for (int64_t n = 0; n < d.n; ++n)
        for (int64_t o = 0; o < ocp; ++o)
          if (o < d.oc)
            ref_out[size_t(n * ocp + o)] = plain[size_t(n * d.oc + o)];
          else
            d_out.set(n * ocp + o, NAN);
      const MatmulGrads ref = backward_reference(d, x, d_out, ocp, d_weight.values(), {});
      ops::MatmulForwardArgs f{e.at(out), e.at(x.inp), e.at(x.weight), {}};
      f.out_padded = true;
      ops::matmul_forward(f, e.stream());
      ops::MatmulBackwardArgs b{e.at(d_inp), e.at(d_weight), {}, e.at(d_out), e.at(x.inp), e.at(x.weight)};
      b.d_out_padded = true;
      ops::matmul_backward(b, e.stream());
      e.expect("padded out", out, ref_out, tolerance_for(dtype));
      e.expect("padded d_out: d_inp", d_inp, ref.d_inp, tolerance_for(dtype));
      e.expect("padded d_out: d_weight (f32)", d_weight, ref.d_weight, tolerance_for(DType::f32));
    },
    kSumSlack));

}  // namespace
}  // namespace strata::test
