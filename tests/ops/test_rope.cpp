// Op-table cases for rope_forward / rope_backward: a double-precision reference of
// the rotate-half rotation (partly rotated heads, position offsets, in place),
// forward-backward round trips, finite differences, argument errors.
// Shapes are {B, T, H, D}.
#include <catch2/catch.hpp>
#include <cmath>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

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

ops::RopeArgs rope_args(const HostTensor& out, const HostTensor& inp, int64_t rotated,
                        int64_t pos_offset) {
  ops::RopeArgs a;
  a.out = out.view();
  a.inp = inp.view();
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
    for (int64_t pos_offset : {int64_t(0), int64_t(37)})
      for (bool in_place : {false, true}) {
        INFO("rotated_heads " << rotated << ", pos_offset " << pos_offset
                              << (in_place ? ", in place" : ""));
        fn(rotated, pos_offset, in_place);
      }
}

void rope_reference_case(DType dtype, const std::vector<int64_t>& shape, bool forward) {
  for_variants(shape[2], [&](int64_t rotated, int64_t pos_offset, bool in_place) {
    HostTensor inp(dtype, shape), out(dtype, shape);
    inp.uniform(31);
    const std::vector<double> ref = rope_reference(inp, rotated, pos_offset, forward ? 1.0 : -1.0);
    HostTensor& dst = in_place ? inp : out;
    const ops::RopeArgs a = rope_args(dst, inp, rotated, pos_offset);
    if (forward)
      ops::rope_forward(a, cpu().stream());
    else
      ops::rope_backward(a, cpu().stream());
    expect_close("out", dst, ref, tolerance_for(dtype));
  });
}

STRATA_OP_CASE({"rope_forward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) { rope_reference_case(dtype, shape, true); }});

STRATA_OP_CASE({"rope_backward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  rope_reference_case(dtype, shape, false);
                  // Backward undoes forward up to the rounding of the stored middle value.
                  HostTensor x(dtype, shape), y(dtype, shape), back(dtype, shape);
                  x.uniform(32);
                  ops::rope_forward(rope_args(y, x, shape[2], 5), cpu().stream());
                  ops::rope_backward(rope_args(back, y, shape[2], 5), cpu().stream());
                  expect_close("backward(forward(x))", back, x.values(), tolerance_for(dtype));
                }});

STRATA_OP_CASE({"rope_backward", CaseKind::gradcheck, {{2, 3, 3, 4}, {1, 2, 1, 10}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t rotated = std::max<int64_t>(1, shape[2] - 1);
                  HostTensor inp(dtype, shape), out(dtype, shape), w(dtype, shape), d_inp(dtype, shape);
                  inp.uniform(33);
                  w.uniform(34);
                  auto loss = [&] {
                    ops::rope_forward(rope_args(out, inp, rotated, 3), cpu().stream());
                    return dot(out, w.values());
                  };
                  ops::rope_backward(rope_args(d_inp, w, rotated, 3), cpu().stream());
                  expect_gradient("d_inp", inp, loss, d_inp.values());
                }});

template <class F>
void expect_error(F&& f, const char* op, const char* arg) {
  REQUIRE_THROWS_WITH(f(), Catch::Contains(op) && Catch::Contains(std::string("'") + arg + "'"));
}

void rope_errors(bool forward) {
  const char* op = forward ? "rope_forward" : "rope_backward";
  HostTensor x(DType::bf16, {2, 3, 4, 8}), y(DType::bf16, {2, 3, 4, 8});
  HostTensor odd(DType::bf16, {2, 3, 4, 7}), flat(DType::bf16, {6, 32}), f32(DType::f32, {2, 3, 4, 8});
  HostTensor other(DType::bf16, {2, 3, 8, 4}), empty(DType::bf16, {0, 3, 4, 8});
  const ops::RopeArgs a = rope_args(y, x, 4, 0);
  auto run = [&](auto change, const char* arg) {
    ops::RopeArgs b = a;
    change(b);
    expect_error([&] { forward ? ops::rope_forward(b, cpu().stream()) : ops::rope_backward(b, cpu().stream()); },
                 op, arg);
  };
  run([&](ops::RopeArgs& b) { b.inp = TensorView(); }, "inp");
  run([&](ops::RopeArgs& b) { b.inp = empty.view(); }, "inp");
  run([&](ops::RopeArgs& b) { b.inp = b.out = odd.view(); }, "inp");
  run([&](ops::RopeArgs& b) { b.inp = b.out = flat.view(); }, "inp");
  run([&](ops::RopeArgs& b) { b.out = TensorView(); }, "out");
  run([&](ops::RopeArgs& b) { b.out = other.view(); }, "out");
  run([&](ops::RopeArgs& b) { b.out = f32.view(); }, "out");
  run([&](ops::RopeArgs& b) { b.rotated_heads = 0; }, "rotated_heads");
  run([&](ops::RopeArgs& b) { b.rotated_heads = 5; }, "rotated_heads");
  run([&](ops::RopeArgs& b) { b.theta = 0.0f; }, "theta");
  run([&](ops::RopeArgs& b) { b.pos_offset = -1; }, "pos_offset");
}

STRATA_OP_CASE({"rope_forward", CaseKind::errors, {{0}}, kF32,
                [](DType, const std::vector<int64_t>&) { rope_errors(true); }});
STRATA_OP_CASE({"rope_backward", CaseKind::errors, {{0}}, kF32,
                [](DType, const std::vector<int64_t>&) { rope_errors(false); }});

}  // namespace
}  // namespace strata::test
