// CUDA AdamW: one fused pass over a flat f32 shard that reads grad, master, m, v and
// writes master, m, v and (optionally) the working copy rounded to its dtype.
// Invariant: the arithmetic is the CPU backend's, operation for operation (the same
// explicit fmaf calls, constants folded on the host in double), so a step gives the
// same bits on both backends; the working copy is exactly store<W>(new master).
#include <cmath>

#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
struct AdamWConstants {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float inv_bias1, inv_bias2;  // 1 / (1 - beta^t)
  float lr, eps, weight_decay, grad_scale;
};
}  // namespace

template <class W>
static __global__ void adamw_kernel(float* master, const float* grad, float* m, float* v, W* working, int64_t n,
                                    AdamWConstants c) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) {
    const float g = grad[i] * c.grad_scale;
    const float mi = fmaf(c.beta1, m[i], c.one_minus_beta1 * g);
    const float vi = fmaf(c.beta2, v[i], (c.one_minus_beta2 * g) * g);
    const float denom = sqrtf(vi * c.inv_bias2) + c.eps;
    const float step = fmaf(c.weight_decay, master[i], (mi * c.inv_bias1) / denom);
    const float p = fmaf(-c.lr, step, master[i]);
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    if (working) working[i] = store<W>(p);
  }
}

void adamw_step(const ops::AdamWArgs& a, const Context& ctx) {
  // beta^t in double: for large t, float powers lose the bias correction's digits.
  const double bias1 = 1.0 - std::pow(double(a.beta1), double(a.step));
  const double bias2 = 1.0 - std::pow(double(a.beta2), double(a.step));
  const AdamWConstants c{a.beta1,           1.0f - a.beta1, a.beta2, 1.0f - a.beta2, float(1.0 / bias1),
                         float(1.0 / bias2), a.lr,          a.eps,   a.weight_decay, a.grad_scale};
  const int64_t n = a.master.numel();
  const unsigned grid = blocks_for(n, kThreads);
  const float* grad = a.grad.ptr<float>();
  if (!a.working.defined()) {
    launch(adamw_kernel<float>, grid, kThreads, 0, ctx.stream, a.master.ptr<float>(), grad, a.m.ptr<float>(),
           a.v.ptr<float>(), static_cast<float*>(nullptr), n, c);
    return;
  }
  dispatch_float(a.working.dtype, [&](auto tag) {
    using W = decltype(tag);
    launch(adamw_kernel<W>, grid, kThreads, 0, ctx.stream, a.master.ptr<float>(), grad, a.m.ptr<float>(),
           a.v.ptr<float>(), a.working.ptr<W>(), n, c);
  });
}

}  // namespace strata::STRATA_CUDA_NS
