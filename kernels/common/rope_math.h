// RoPE frequencies, shared by the CPU and CUDA backends so both rotate by the same
// angles: w_i = theta^(-2i/D), optionally rescaled as Hugging Face's "linear" and
// "llama3" rope types do (transformers' _compute_linear_scaling_rope_parameters and
// _compute_llama3_parameters). Formed in double; callers round cos / sin to f32.
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"
#include "strata/ops.h"

namespace strata {

// RopeScalingType and RopeScalingArgs: strata/ops.h.

STRATA_HD double rope_inv_freq(int64_t i, int64_t d, float theta, const RopeScalingArgs& s) {
  const double w = pow(double(theta), -2.0 * double(i) / double(d));
  if (s.type == RopeScalingType::linear) return w / double(s.factor);
  if (s.type != RopeScalingType::llama3) return w;
  const double wavelen = 2.0 * 3.14159265358979323846 / w;
  const double low_wavelen = double(s.original_max_seq) / double(s.low_freq_factor);
  const double high_wavelen = double(s.original_max_seq) / double(s.high_freq_factor);
  if (wavelen < high_wavelen) return w;                     // high frequencies: unchanged
  if (wavelen > low_wavelen) return w / double(s.factor);  // low frequencies: scaled
  const double smooth = (double(s.original_max_seq) / wavelen - double(s.low_freq_factor)) /
                        (double(s.high_freq_factor) - double(s.low_freq_factor));
  return (1.0 - smooth) * w / double(s.factor) + smooth * w;
}

}  // namespace strata
