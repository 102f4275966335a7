// CPU rotary position embedding ("rotate half" pairing), forward and backward.
// Invariants: backward is forward with the angle negated, using the very same f32
// cos / sin values, so the two are inverses up to rounding of the stored result;
// each head is converted to f32 scratch before it is written, so inp may alias out.
#include <cmath>
#include <cstring>

#include "cpu.h"
#include "row_math.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

enum Slot { kCos = 0, kSin, kHead };

// cos / sin (half) of position p: the angle p * theta^(-2i/D) is formed in double so
// large positions keep their phase; only the final cos / sin are rounded to f32.
void angle_table(int64_t p, float theta, const RopeScalingArgs& scaling, int64_t d, float* cos_out,
                 float* sin_out) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = double(p) * rope_inv_freq(i, d, theta, scaling);
    cos_out[i] = float(std::cos(angle));
    sin_out[i] = float(std::sin(angle));
  }
}

// out = x rotated by (cos, sign * sin), pairing element i with i + half.
template <class T>
void rotate(const float* __restrict x, const float* __restrict c, const float* __restrict s,
            float sign, int64_t half, T* __restrict out) {
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half], sn = sign * s[i];
    out[i] = store<T>(x1 * c[i] - x2 * sn);
    out[i + half] = store<T>(x2 * c[i] + x1 * sn);
  }
}

template <class T>
void rope_impl(const ops::RopeArgs& a, float sign) {
  const int64_t b_size = a.inp.shape[0], t_size = a.inp.shape[1];
  const int64_t heads = a.inp.shape[2], d = a.inp.shape[3], half = d / 2;
  const int64_t rotated = a.rotated_heads;
  const T* inp = a.inp.ptr<T>();  // (B, T, H, D)
  T* out = a.out.ptr<T>();        // (B, T, H, D)
  const bool in_place = a.inp.data == a.out.data;

  // Work items are ordered t-major (k = t * B + b) so a task reuses one angle table
  // for every batch row at the same position.
  const int64_t grain = std::max<int64_t>(1, 16384 / (heads * d));
  parallel_for(b_size * t_size, grain, [&](int64_t begin, int64_t end) {
    float* cos_t = rows::scratch(kCos, half);  // (D/2)
    float* sin_t = rows::scratch(kSin, half);  // (D/2)
    float* x = rows::scratch(kHead, d);        // (D) one head in f32
    int64_t table_t = -1;
    for (int64_t k = begin; k < end; ++k) {
      const int64_t t = k / b_size, b = k % b_size;
      if (t != table_t) {
        angle_table(t + a.pos_offset, a.theta, a.scaling, d, cos_t, sin_t);
        table_t = t;
      }
      const int64_t row = (b * t_size + t) * heads * d;  // (H, D) at (b, t)
      for (int64_t h = 0; h < rotated; ++h) {
        rows::load(inp + row + h * d, x, d);
        rotate(x, cos_t, sin_t, sign, half, out + row + h * d);
      }
      if (!in_place && rotated < heads)
        std::memcpy(out + row + rotated * d, inp + row + rotated * d,
                    size_t((heads - rotated) * d) * sizeof(T));
    }
  });
}

}  // namespace

void rope_forward(const ops::RopeArgs& a) {
  OpTimer timer(OpCategory::attention);
  dispatch_float(a.inp.dtype, [&](auto t) { rope_impl<decltype(t)>(a, 1.0f); });
}

void rope_backward(const ops::RopeArgs& a) {
  OpTimer timer(OpCategory::attention);
  dispatch_float(a.inp.dtype, [&](auto t) { rope_impl<decltype(t)>(a, -1.0f); });
}

}  // namespace strata::cpu
