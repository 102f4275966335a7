// Reference cases for dropout_forward / dropout_backward, for every backend: the
// documented mask keep(i) = philox_uniform(key, i) >= p, out of place and in place.
// Finite differences, argument errors and the mask's statistics: test_dropout.cpp.
#include "common/philox.h"
#include "ops.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

const num::RandomKey kKey{0x0123456789abcdefull, 7, 11};

std::vector<double> dropout_reference(const HostTensor& inp, float p) {
  std::vector<double> out = inp.values();
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = num::philox_uniform(kKey, i) >= p ? out[i] / (1.0 - double(p)) : 0.0;
  return out;
}

// The mask is a pure function of (key, i) and a kept element is one rounding of one
// multiply: every backend gives the CPU's bits.
constexpr double kBitwise = 0.0;

// Shapes are the tensor's own shape.
const std::vector<std::vector<int64_t>> kShapes = {{1}, {3}, {17}, {1000}, {5, 33}, {2, 3, 17}};

void dropout_reference_case(OpEnv& e, DType dtype, const std::vector<int64_t>& shape, bool forward) {
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f})
    for (bool in_place : {false, true}) {
      HostTensor inp(dtype, shape), out(dtype, shape);
      inp.uniform(41);
      const std::vector<double> ref = dropout_reference(inp, p);
      HostTensor& dst = in_place ? inp : out;
      ops::DropoutArgs a;
      a.inp = e.at(inp);
      a.out = e.at(dst);
      a.p = p;
      a.key = kKey;
      if (forward)
        ops::dropout_forward(a, e.stream());
      else
        ops::dropout_backward(a, e.stream());
      e.expect(std::string("out, p ") + std::to_string(p) + (in_place ? ", in place" : ""), dst, ref,
               tolerance_for(dtype));
    }
}

STRATA_OP_CASE(reference_case("dropout_forward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                dropout_reference_case(e, dtype, shape, true);
                              },
                              kBitwise));

STRATA_OP_CASE(reference_case("dropout_backward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                dropout_reference_case(e, dtype, shape, false);
                              },
                              kBitwise));

}  // namespace
}  // namespace strata::test
