// Reference cases for rope_forward / rope_backward, for every backend: a
// double-precision reference of the rotate-half rotation (partly rotated heads,
// position offsets, in place) and forward-backward round trips. Shapes are {B, T, H, D}.
// Finite differences and argument errors: tests/ops/test_rope.cpp.
#include <algorithm>
#include <cmath>

#include "ops.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

constexpr float kTheta = 10000.0f;

// x rotated by +angle (forward) or -angle (backward), in double.
std::vector<double> rope_reference(const HostTensor& inp, int64_t rotated, int64_t pos_offset,
                                   double direction) {
  const auto& sh = inp.shape();
  const int64_t b_size = sh[0], t_size = sh[1], heads = sh[2], d = sh[3], half = d / 2;
  std::vector<double> x = inp.values(), out = x;
  for (int64_t b = 0; b < b_size; ++b)
    for (int64_t t = 0; t < t_size; ++t)
      for (int64_t h = 0; h < rotated; ++h) {
        const size_t base = size_t(((b * t_size + t) * heads + h) * d);
        for (int64_t i = 0; i < half; ++i) {
          const double angle = direction * double(t + pos_offset) *
                               std::pow(double(kTheta), -2.0 * double(i) / double(d));
          const double x1 = x[base + size_t(i)], x2 = x[base + size_t(i + half)];
          out[base + size_t(i)] = x1 * std::cos(angle) - x2 * std::sin(angle);
          out[base + size_t(i + half)] = x2 * std::cos(angle) + x1 * std::sin(angle);
        }
      }
  return out;
}

ops::RopeArgs rope_args(const TensorView& out, const TensorView& inp, int64_t rotated, int64_t pos_offset) {
  ops::RopeArgs a;
  a.out = out;
  a.inp = inp;
  a.rotated_heads = rotated;
  a.theta = kTheta;
  a.pos_offset = pos_offset;
  return a;
}

const std::vector<std::vector<int64_t>> kShapes = {
    {1, 1, 1, 2}, {2, 3, 3, 4}, {1, 17, 2, 6}, {1, 3, 1, 1000}, {2, 5, 3, 34}};

// Runs `fn(rotated, pos_offset, in_place)` over the variants every shape is tried with.
template <class F>
void for_variants(int64_t heads, F&& fn) {
  for (int64_t rotated : {heads, std::max<int64_t>(1, heads - 1)})
    for (int64_t pos_offset : {int64_t(0), int64_t(37), int64_t(1000)})  // 1000: the angle needs double
      for (bool in_place : {false, true}) fn(rotated, pos_offset, in_place);
}

void rope_reference_case(OpEnv& e, DType dtype, const std::vector<int64_t>& shape, bool forward) {
  for_variants(shape[2], [&](int64_t rotated, int64_t pos_offset, bool in_place) {
    HostTensor inp(dtype, shape), out(dtype, shape);
    inp.uniform(31);
    const std::vector<double> ref = rope_reference(inp, rotated, pos_offset, forward ? 1.0 : -1.0);
    HostTensor& dst = in_place ? inp : out;
    const ops::RopeArgs a = rope_args(e.at(dst), e.at(inp), rotated, pos_offset);
    if (forward)
      ops::rope_forward(a, e.stream());
    else
      ops::rope_backward(a, e.stream());
    e.expect("out, rotated_heads " + std::to_string(rotated) + ", pos_offset " + std::to_string(pos_offset) +
                 (in_place ? ", in place" : ""),
             dst, ref, tolerance_for(dtype));
  });
}

STRATA_OP_CASE(reference_case("rope_forward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                rope_reference_case(e, dtype, shape, true);
                              }));

STRATA_OP_CASE(reference_case("rope_backward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                rope_reference_case(e, dtype, shape, false);
                                // Backward undoes forward up to the rounding of the stored middle value.
                                HostTensor x(dtype, shape), y(dtype, shape), back(dtype, shape);
                                x.uniform(32);
                                ops::rope_forward(rope_args(e.at(y), e.at(x), shape[2], 5), e.stream());
                                ops::rope_backward(rope_args(e.at(back), e.at(y), shape[2], 5), e.stream());
                                e.expect("backward(forward(x))", back, x.values(), tolerance_for(dtype));
                              }));

}  // namespace
}  // namespace strata::test
