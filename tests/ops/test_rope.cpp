// Op-table cases for rope_forward / rope_backward that run on the CPU only: finite
// differences and argument errors (the reference cases, for every backend, are in
// cases/rope.cpp).
// Shapes are {B, T, H, D}.
#include <catch2/catch.hpp>
#include <cmath>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

constexpr float kTheta = 10000.0f;

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
