// Reference cases for attention_decode (attention of new rows against a KV cache),
// for every backend: a double-precision reference over caches holding earlier
// positions, grouped kv heads, sliding windows, and the cache append itself (exact
// copies). Shapes are {B, T, NH, NKV, HD, S, pos} or {..., window}. Agreement with
// attention_forward and argument errors: tests/ops/test_attention_decode.cpp.
#include <cmath>

#include "ops.h"
#include "ops/op_table.h"

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
    {1, 5, 2, 2, 6, 9, 4, 1},      {2, 7, 3, 1, 16, 7, 0, 3},  {1, 3, 4, 4, 34, 40, 30, 40},
    {1, 1, 4, 2, 64, 80, 70},      {2, 2, 2, 1, 128, 40, 33},  {1, 1, 4, 2, 64, 80, 70, 16},
    // Contexts of several 256-key chunks (partial softmax results combined): one new row,
    // a prefill across chunk bounds, a window spanning two chunks.
    {1, 1, 8, 2, 64, 700, 650},    {1, 3, 2, 1, 16, 600, 510}, {2, 1, 4, 4, 32, 700, 690, 300}};

// out against the reference; the caches exactly: the rows' k and v appended at
// positions [pos, pos + T), every other position kept.
void decode_case(OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
  const Geometry g(shape);
  HostTensor qkv(dtype, {g.B, g.T, g.width()}), out(dtype, {g.B, g.T, g.NH, g.HD});
  HostTensor kc(dtype, {g.B, g.NKV, g.S, g.HD}), vc(dtype, {g.B, g.NKV, g.S, g.HD});
  qkv.uniform(41, -2, 2), kc.uniform(42, -2, 2), vc.uniform(43);
  const std::vector<double> ref = decode_reference(g, qkv, kc, vc);
  std::vector<double> want_k = kc.values(), want_v = vc.values();
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t kv = 0; kv < g.NKV; ++kv)
      for (int64_t j = g.pos; j < g.pos + g.T; ++j)
        for (int64_t d = 0; d < g.HD; ++d) {
          const size_t at = size_t(((b * g.NKV + kv) * g.S + j) * g.HD + d);
          const int64_t row = (b * g.T + j - g.pos) * g.width();
          want_k[at] = qkv.get(row + (g.NH + kv) * g.HD + d);
          want_v[at] = qkv.get(row + (g.NH + g.NKV + kv) * g.HD + d);
        }
  ops::attention_decode({e.at(out), e.at(qkv), e.at(kc), e.at(vc), g.NH, g.pos, g.window}, e.stream());
  e.expect("out", out, ref, tolerance_for(dtype));
  e.expect("k_cache", kc, want_k, {0.0, 0.0});
  e.expect("v_cache", vc, want_v, {0.0, 0.0});
}

// The decode kernel sums a row's scores in another order than the CPU.
constexpr double kSumSlack = 4.0;

STRATA_OP_CASE(reference_case("attention_decode", kShapes, kAllFloat, decode_case, kSumSlack));

}  // namespace
}  // namespace strata::test
