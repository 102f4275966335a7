// Op-table cases for RoPE with frequency rescaling (linear, llama3) against a
// double-precision reference written the way transformers computes the frequencies
// (_compute_llama3_parameters: masks over wavelengths, not rope_math.h's branches), and
// argument errors for the scaling. Shapes are {B, T, H, D}.
#include <catch2/catch.hpp>
#include <cmath>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

constexpr float kTheta = 500000.0f;

std::vector<double> hf_inv_freq(int64_t d, const RopeScalingArgs& s) {
  const int64_t half = d / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(double(kTheta), double(2 * i) / double(d));
  if (s.type == RopeScalingType::linear) {
    for (double& w : inv) w /= s.factor;
  } else if (s.type == RopeScalingType::llama3) {
    const double old_len = s.original_max_seq, low_wl = old_len / s.low_freq_factor,
                 high_wl = old_len / s.high_freq_factor;
    for (double& w : inv) {
      const double wavelen = 2 * M_PI / w;
      const double llama = wavelen > low_wl ? w / s.factor : w;
      const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      const double smoothed = (1 - smooth) * llama / s.factor + smooth * llama;
      const bool medium = !(wavelen < high_wl) && !(wavelen > low_wl);
      w = medium ? smoothed : llama;
    }
  }
  return inv;
}

std::vector<double> reference(const HostTensor& inp, int64_t pos_offset, const RopeScalingArgs& s) {
  const auto& sh = inp.shape();
  const int64_t b_size = sh[0], t_size = sh[1], heads = sh[2], d = sh[3], half = d / 2;
  const std::vector<double> inv = hf_inv_freq(d, s);
  std::vector<double> x = inp.values(), out = x;
  for (int64_t b = 0; b < b_size; ++b)
    for (int64_t t = 0; t < t_size; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const size_t base = size_t(((b * t_size + t) * heads + h) * d);
        for (int64_t i = 0; i < half; ++i) {
          const double angle = double(t + pos_offset) * inv[size_t(i)];
          const double x1 = x[base + size_t(i)], x2 = x[base + size_t(i + half)];
          out[base + size_t(i)] = x1 * std::cos(angle) - x2 * std::sin(angle);
          out[base + size_t(i + half)] = x2 * std::cos(angle) + x1 * std::sin(angle);
        }
      }
  return out;
}

ops::RopeArgs args(const HostTensor& out, const HostTensor& inp, int64_t pos_offset, const RopeScalingArgs& s) {
  ops::RopeArgs a;
  a.out = out.view();
  a.inp = inp.view();
  a.rotated_heads = inp.shape()[2];
  a.theta = kTheta;
  a.pos_offset = pos_offset;
  a.scaling = s;
  return a;
}

// Llama-3.2's values, and a small original context so short test sequences reach all
// three bands (kept, smoothed, scaled) of the 64-wide head.
const RopeScalingArgs kLlama3{RopeScalingType::llama3, 32.0f, 1.0f, 4.0f, 8192.0f};
const RopeScalingArgs kLlama3Short{RopeScalingType::llama3, 8.0f, 1.0f, 4.0f, 64.0f};
const RopeScalingArgs kLinear{RopeScalingType::linear, 4.0f};

}  // namespace

STRATA_OP_CASE({"rope_forward", CaseKind::reference, {{1, 9, 2, 64}, {2, 3, 1, 128}}, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (const RopeScalingArgs& s : {kLlama3, kLlama3Short, kLinear})
                    for (int64_t pos_offset : {int64_t(0), int64_t(5000)}) {
                      INFO("scaling " << int(s.type) << " factor " << s.factor << ", pos_offset " << pos_offset);
                      HostTensor inp(dtype, shape), out(dtype, shape);
                      inp.uniform(41);
                      ops::rope_forward(args(out, inp, pos_offset, s), cpu().stream());
                      expect_close("out", out, reference(inp, pos_offset, s), tolerance_for(dtype));
                    }
                }});

STRATA_OP_CASE({"rope_forward", CaseKind::reference, {{1, 4, 2, 16}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  // The three llama3 bands really differ from plain RoPE at long positions.
                  HostTensor inp(dtype, shape), plain(dtype, shape), scaled(dtype, shape);
                  inp.uniform(42);
                  ops::rope_forward(args(plain, inp, 3000, {}), cpu().stream());
                  ops::rope_forward(args(scaled, inp, 3000, kLlama3Short), cpu().stream());
                  double diff = 0;
                  for (size_t i = 0; i < plain.values().size(); ++i)
                    diff = std::max(diff, std::abs(plain.values()[i] - scaled.values()[i]));
                  CHECK(diff > 0.1);
                }});

STRATA_OP_CASE({"rope_forward", CaseKind::errors, {{0}}, kF32, [](DType, const std::vector<int64_t>&) {
                  HostTensor x(DType::f32, {1, 2, 2, 8}), y(DType::f32, {1, 2, 2, 8});
                  auto fails = [&](RopeScalingArgs s, const char* what) {
                    REQUIRE_THROWS_WITH(ops::rope_forward(args(y, x, 0, s), cpu().stream()),
                                        Catch::Contains("rope_forward") && Catch::Contains(what));
                  };
                  fails({RopeScalingType::linear, 0.0f}, "scaling.factor");
                  fails({RopeScalingType::llama3, 8.0f, 4.0f, 1.0f, 64.0f}, "high_freq_factor > low_freq_factor");
                  fails({RopeScalingType::llama3, 8.0f, 1.0f, 4.0f, 0.0f}, "original_max_seq > 0");
                }});

}  // namespace strata::test
