// CUDA rotary position embedding ("rotate half" pairing), forward and backward.
// Invariants: the angle table is the CPU backend's — p * rope_inv_freq (common/rope_math.h) formed in
// double, only cos / sin rounded to f32 — computed once per call into scratch, and
// backward is forward with the sine negated; each thread reads both elements of its
// pair before writing either, so inp may alias out.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

// table (T, D/2, 2): cos, sin of position t + pos_offset.
static __global__ void rope_table_kernel(float* table, int64_t t_size, int64_t d, float theta,
                                         RopeScalingArgs scaling, int64_t pos_offset) {
  const int64_t half = d / 2;
  for (int64_t k = grid_first(); k < t_size * half; k += grid_stride()) {
    const int64_t t = k / half, i = k % half;
    const double angle = double(t + pos_offset) * rope_inv_freq(i, d, theta, scaling);
    table[2 * k] = float(cos(angle));
    table[2 * k + 1] = float(sin(angle));
  }
}

// One thread per pair (b, t, h, i) of rotated heads; heads >= rotated are copied.
template <class T>
static __global__ void rope_kernel(T* out, const T* inp, const float* table, int64_t b_size, int64_t t_size,
                                   int64_t heads, int64_t rotated, int64_t d, float sign) {
  const int64_t half = d / 2, pairs = b_size * t_size * heads * half;
  for (int64_t k = grid_first(); k < pairs; k += grid_stride()) {
    const int64_t i = k % half, h = (k / half) % heads, bt = k / (half * heads), t = bt % t_size;
    const int64_t at = (bt * heads + h) * d + i;  // element i of head h at (b, t)
    const float x1 = load(inp[at]), x2 = load(inp[at + half]);
    if (h >= rotated) {
      out[at] = inp[at];
      out[at + half] = inp[at + half];
      continue;
    }
    const float c = table[2 * (t * half + i)], s = sign * table[2 * (t * half + i) + 1];
    out[at] = store<T>(x1 * c - x2 * s);
    out[at + half] = store<T>(x2 * c + x1 * s);
  }
}

namespace {
void rope(const ops::RopeArgs& a, const Context& c, float sign) {
  const int64_t b_size = a.inp.shape[0], t_size = a.inp.shape[1], heads = a.inp.shape[2], d = a.inp.shape[3];
  float* table = static_cast<float*>(c.scratch->get(size_t(t_size * d) * sizeof(float)));  // (T, D/2, 2)
  launch(rope_table_kernel, blocks_for(t_size * d / 2, kThreads), kThreads, 0, c.stream, table, t_size, d, a.theta, a.scaling,
         a.pos_offset);
  const int64_t pairs = b_size * t_size * heads * d / 2;
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(rope_kernel<T>, blocks_for(pairs, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.inp.ptr<T>()), static_cast<const float*>(table), b_size, t_size, heads,
           a.rotated_heads, d, sign);
  });
}
}  // namespace

void rope_forward(const ops::RopeArgs& a, const Context& c) { rope(a, c, 1.0f); }

void rope_backward(const ops::RopeArgs& a, const Context& c) { rope(a, c, -1.0f); }

}  // namespace strata::STRATA_CUDA_NS
