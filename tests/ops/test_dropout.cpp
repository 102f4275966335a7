// Op-table cases for dropout_forward / dropout_backward that run on the CPU only
// (finite differences, argument errors; the reference cases, for every backend, are
// in cases/dropout.cpp), plus the statistics of the mask: keep rate, key dependence.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "common/philox.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

const num::RandomKey kKey{0x0123456789abcdefull, 7, 11};

ops::DropoutArgs dropout_args(const HostTensor& out, const HostTensor& inp, float p,
                              num::RandomKey key = kKey) {
  ops::DropoutArgs a;
  a.out = out.view();
  a.inp = inp.view();
  a.p = p;
  a.key = key;
  return a;
}

STRATA_OP_CASE({"dropout_backward", CaseKind::gradcheck, {{37}, {3, 70}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  HostTensor inp(dtype, shape), out(dtype, shape), w(dtype, shape), d_inp(dtype, shape);
                  inp.uniform(42);
                  w.uniform(43);
                  auto loss = [&] {
                    ops::dropout_forward(dropout_args(out, inp, 0.3f), cpu().stream());
                    return dot(out, w.values());
                  };
                  ops::dropout_backward(dropout_args(d_inp, w, 0.3f), cpu().stream());
                  expect_gradient("d_inp", inp, loss, d_inp.values());
                }});

template <class F>
void expect_error(F&& f, const char* op, const char* arg) {
  REQUIRE_THROWS_WITH(f(), Catch::Contains(op) && Catch::Contains(std::string("'") + arg + "'"));
}

void dropout_errors(bool forward) {
  const char* op = forward ? "dropout_forward" : "dropout_backward";
  HostTensor x(DType::f16, {4, 8}), y(DType::f16, {4, 8}), f32(DType::f32, {4, 8});
  HostTensor other(DType::f16, {8, 4}), empty(DType::f16, {4, 0}), ints(DType::i32, {4, 8});
  const ops::DropoutArgs a = dropout_args(y, x, 0.1f);
  auto run = [&](auto change, const char* arg) {
    ops::DropoutArgs b = a;
    change(b);
    expect_error(
        [&] { forward ? ops::dropout_forward(b, cpu().stream()) : ops::dropout_backward(b, cpu().stream()); },
        op, arg);
  };
  run([&](ops::DropoutArgs& b) { b.inp = TensorView(); }, "inp");
  run([&](ops::DropoutArgs& b) { b.inp = empty.view(); }, "inp");
  run([&](ops::DropoutArgs& b) { b.inp = b.out = ints.view(); }, "inp");
  run([&](ops::DropoutArgs& b) { b.out = TensorView(); }, "out");
  run([&](ops::DropoutArgs& b) { b.out = other.view(); }, "out");
  run([&](ops::DropoutArgs& b) { b.out = f32.view(); }, "out");
  run([&](ops::DropoutArgs& b) { b.p = 1.0f; }, "p");
  run([&](ops::DropoutArgs& b) { b.p = -0.1f; }, "p");
  run([&](ops::DropoutArgs& b) { b.p = std::numeric_limits<float>::quiet_NaN(); }, "p");
}

STRATA_OP_CASE({"dropout_forward", CaseKind::errors, {{0}}, kF32,
                [](DType, const std::vector<int64_t>&) { dropout_errors(true); }});
STRATA_OP_CASE({"dropout_backward", CaseKind::errors, {{0}}, kF32,
                [](DType, const std::vector<int64_t>&) { dropout_errors(false); }});

// The kept positions of dropout_forward over ones: out[i] != 0.
std::vector<bool> mask(int64_t n, float p, num::RandomKey key) {
  HostTensor ones(DType::f32, {n}), out(DType::f32, {n});
  ones.fill(1.0);
  ops::dropout_forward(dropout_args(out, ones, p, key), cpu().stream());
  std::vector<bool> kept(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) kept[size_t(i)] = out.get(i) != 0.0;
  return kept;
}

}  // namespace

TEST_CASE("dropout keeps 1 - p of the elements", "[ops][cpu]") {
  const int64_t n = 1000000;
  for (float p : {0.1f, 0.5f, 0.85f}) {
    INFO("p " << p);
    HostTensor ones(DType::f32, {n}), out(DType::f32, {n});
    ones.fill(1.0);
    ops::dropout_forward(dropout_args(out, ones, p), cpu().stream());
    int64_t kept = 0, wrong_scale = 0;
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; ++i) {
      const double v = out.get(i);
      kept += v != 0.0;
      wrong_scale += v != 0.0 && std::fabs(v - scale) > 1e-6 * scale;
    }
    const double expected = double(n) * (1.0 - p), sigma = std::sqrt(double(n) * p * (1.0 - p));
    CHECK(std::fabs(double(kept) - expected) <= 4.0 * sigma);
    CHECK(wrong_scale == 0);
  }
}

TEST_CASE("dropout masks depend on the key and only on the key", "[ops][cpu]") {
  const int64_t n = 100000;
  const float p = 0.5f;
  const std::vector<bool> a = mask(n, p, kKey), again = mask(n, p, kKey);
  CHECK(a == again);
  // Changing any part of the key gives an unrelated mask: about half the positions
  // differ at p = 0.5 (expected n/2, sigma ~ 160).
  num::RandomKey other_seed = kKey, other_key1 = kKey, other_key2 = kKey;
  other_seed.seed += 1;
  other_key1.key1 += 1;
  other_key2.key2 += 1;
  for (const num::RandomKey& k : {other_seed, other_key1, other_key2}) {
    const std::vector<bool> b = mask(n, p, k);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i) differ += a[size_t(i)] != b[size_t(i)];
    CHECK(differ > n / 2 - 2000);
    CHECK(differ < n / 2 + 2000);
  }
}

}  // namespace strata::test
