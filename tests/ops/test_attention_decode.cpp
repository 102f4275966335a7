// Op-table cases for attention_decode (attention of new rows against a KV cache): a
// double-precision reference over caches holding earlier positions, grouped kv heads,
// the cache append itself (exact copies), agreement with attention_forward when the
// whole causal sequence is decoded at once (also under a sliding window), and argument
// errors. Shapes are {B, T, NH, NKV, HD, S, pos} or {..., window}: a sliding window.
#include <catch2/catch.hpp>
#include <cmath>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

struct Geometry {
  int64_t B, T, NH, NKV, HD, S, pos, window;
  explicit Geometry(const std::vector<int64_t>& s)
      : B(s[0]), T(s[1]), NH(s[2]), NKV(s[3]), HD(s[4]), S(s[5]), pos(s[6]), window(s.size() > 7 ? s[7] : 0) {}
  int64_t width() const { return (NH + 2 * NKV) * HD; }
};

// out of each new row in double, from the caches' earlier positions and the rows' k, v.
std::vector<double> decode_reference(const Geometry& g, const HostTensor& qkv, const HostTensor& kc,
                                     const HostTensor& vc) {
  std::vector<double> out(static_cast<size_t>(g.B * g.T * g.NH * g.HD));
  auto key = [&](const HostTensor& cache, int64_t b, int64_t kv, int64_t j, int64_t d, int64_t which) {
    if (j >= g.pos) return qkv.get(((b * g.T) + j - g.pos) * g.width() + (g.NH + which * g.NKV + kv) * g.HD + d);
    return cache.get(((b * g.NKV + kv) * g.S + j) * g.HD + d);
  };
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t t = 0; t < g.T; ++t)
      for (int64_t h = 0; h < g.NH; ++h) {
        const int64_t kv = h / (g.NH / g.NKV), keys = g.pos + t + 1;
        const int64_t first = g.window > 0 ? std::max<int64_t>(0, keys - g.window) : 0;  // keys [first, keys)
        std::vector<double> s(static_cast<size_t>(keys), -INFINITY);
        double max = -INFINITY, sum = 0;
        for (int64_t j = first; j < keys; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < g.HD; ++d)
            dot += qkv.get((b * g.T + t) * g.width() + h * g.HD + d) * key(kc, b, kv, j, d, 0);
          s[size_t(j)] = dot / std::sqrt(double(g.HD));
          max = std::max(max, s[size_t(j)]);
        }
        for (double& x : s) sum += x = std::exp(x - max);
        for (int64_t d = 0; d < g.HD; ++d) {
          double acc = 0;
          for (int64_t j = first; j < keys; ++j) acc += s[size_t(j)] * key(vc, b, kv, j, d, 1);
          out[size_t(((b * g.T + t) * g.NH + h) * g.HD + d)] = acc / sum;
        }
      }
  return out;
}

const std::vector<std::vector<int64_t>> kShapes = {
    {1, 1, 1, 1, 4, 1, 0},         {2, 1, 4, 2, 8, 20, 13},    {1, 5, 2, 2, 6, 9, 4},
    {2, 7, 3, 1, 16, 7, 0},        {1, 3, 4, 4, 34, 40, 30},   {2, 1, 4, 2, 8, 20, 13, 5},
    {1, 5, 2, 2, 6, 9, 4, 1},      {2, 7, 3, 1, 16, 7, 0, 3},  {1, 3, 4, 4, 34, 40, 30, 40}};

void reference_case(DType dtype, const std::vector<int64_t>& shape) {
  const Geometry g(shape);
  HostTensor qkv(dtype, {g.B, g.T, g.width()}), out(dtype, {g.B, g.T, g.NH, g.HD});
  HostTensor kc(dtype, {g.B, g.NKV, g.S, g.HD}), vc(dtype, {g.B, g.NKV, g.S, g.HD});
  qkv.uniform(41, -2, 2), kc.uniform(42, -2, 2), vc.uniform(43);
  const std::vector<double> ref = decode_reference(g, qkv, kc, vc);
  const HostTensor kc_before = kc;
  ops::attention_decode({out.view(), qkv.view(), kc.view(), vc.view(), g.NH, g.pos, g.window}, cpu().stream());
  expect_close("out", out, ref, tolerance_for(dtype));
  // The append: rows' k and v at positions [pos, pos + T), every other position kept.
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t kv = 0; kv < g.NKV; ++kv)
      for (int64_t j = 0; j < g.S; ++j)
        for (int64_t d = 0; d < g.HD; ++d) {
          const int64_t at = ((b * g.NKV + kv) * g.S + j) * g.HD + d;
          const bool fresh = j >= g.pos && j < g.pos + g.T;
          const int64_t row = (b * g.T + j - g.pos) * g.width();
          REQUIRE(kc.get(at) == (fresh ? qkv.get(row + (g.NH + kv) * g.HD + d) : kc_before.get(at)));
          if (fresh) REQUIRE(vc.get(at) == qkv.get(row + (g.NH + g.NKV + kv) * g.HD + d));
        }
}

STRATA_OP_CASE({"attention_decode", CaseKind::reference, kShapes, kAllFloat, reference_case});

TEST_CASE("attention_decode of a whole sequence from position 0 is causal attention_forward", "[ops][cpu]") {
  const DType dtype = GENERATE(DType::f32, DType::bf16);
  const int64_t window = GENERATE(0, 1, 5);
  INFO("window " << window);
  const int64_t B = 2, T = 19, NH = 3, HD = 8;
  HostTensor qkv(dtype, {B, T, 3 * NH * HD}), a(dtype, {B, T, NH, HD}), b(dtype, {B, T, NH, HD});
  HostTensor lse(DType::f32, {B, NH, T}), kc(dtype, {B, NH, T, HD}), vc(dtype, {B, NH, T, HD});
  qkv.uniform(7, -2, 2);
  ops::AttentionForwardArgs f;
  f.out = a.view(), f.lse = lse.view(), f.qkv = qkv.view(), f.n_heads = NH, f.causal = true, f.window = window;
  ops::attention_forward(f, cpu().stream());
  ops::attention_decode({b.view(), qkv.view(), kc.view(), vc.view(), NH, 0, window}, cpu().stream());
  expect_close("decode vs forward", b, a.values(), tolerance_for(dtype));
}

void errors_case(DType, const std::vector<int64_t>&) {
  HostTensor qkv(DType::f32, {2, 3, (4 + 2 * 2) * 8}), out(DType::f32, {2, 3, 4, 8});
  HostTensor kc(DType::f32, {2, 2, 10, 8}), vc(DType::f32, {2, 2, 10, 8}), bf(DType::bf16, {2, 2, 10, 8});
  HostTensor short_v(DType::f32, {2, 2, 9, 8}), flat(DType::f32, {2, 20, 8});
  const ops::AttentionDecodeArgs good{out.view(), qkv.view(), kc.view(), vc.view(), 4, 7};
  auto run = [&](auto change, const char* arg) {
    ops::AttentionDecodeArgs x = good;
    change(x);
    REQUIRE_THROWS_WITH(ops::attention_decode(x, cpu().stream()),
                        Catch::Contains("attention_decode") && Catch::Contains(std::string("'") + arg + "'"));
  };
  run([](auto& x) { x.k_cache = TensorView(); }, "k_cache");
  run([&](auto& x) { x.k_cache = flat.view(); }, "k_cache");
  run([&](auto& x) { x.k_cache = bf.view(); }, "k_cache");
  run([&](auto& x) { x.v_cache = short_v.view(); }, "v_cache");
  run([](auto& x) { x.n_heads = 3; }, "n_heads");
  run([](auto& x) { x.n_heads = 2; }, "qkv");
  run([](auto& x) { x.pos = 8; }, "pos");  // 8 + 3 rows > 10 positions
  run([](auto& x) { x.pos = -1; }, "pos");
  run([](auto& x) { x.window = -2; }, "window");
  ops::attention_decode(good, cpu().stream());  // and the unchanged arguments run
}

STRATA_OP_CASE({"attention_decode", CaseKind::errors, {{0}}, kF32, errors_case});

}  // namespace
}  // namespace strata::test
