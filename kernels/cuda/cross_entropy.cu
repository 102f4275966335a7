// CUDA fused softmax + cross-entropy, one block per row, f32 inside.
// Invariants: no probability tensor is stored (forward keeps the row log-sum-exp);
// d_logits is assigned and may alias logits: every element is read and written by
// the same thread, the target's included. Targets live in device memory, so the
// entry point cannot range-check them: a target outside [0, V) that is not
// ignore_index gives a NaN loss and a NaN gradient row. Padded rows (stride vp >=
// v): columns [v, vp) are never read, and backward assigns them 0.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
int row_threads(int64_t v) { return v >= 1024 ? kThreads : (v >= 128 ? 128 : 32); }
}  // namespace

template <class T>
static __global__ void cross_entropy_forward_kernel(float* losses, float* lse, const T* logits, const int32_t* targets,
                                                    int64_t v, int64_t vp, int32_t ignore_index) {
  __shared__ Shared<float[32]> buf;
  const int64_t r = blockIdx.x;
  const T* x = logits + r * vp;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, load(x[j]));
  m = block_max(m, buf);
  // An all -inf row must not compute exp(-inf - -inf): it gets lse = -inf and a NaN
  // loss. A +inf or NaN logit makes the sum, hence lse and loss, NaN.
  const float shift = m == -INFINITY ? 0.0f : m;
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) sum += expf(load(x[j]) - shift);
  const float log_sum = logf(block_sum(sum, buf));
  if (threadIdx.x != 0) return;
  lse[r] = shift + log_sum;
  const int32_t t = targets[r];
  if (t == ignore_index)
    losses[r] = 0.0f;
  else
    losses[r] = t >= 0 && t < v ? (shift - load(x[t])) + log_sum : NAN;
}

template <class T>
static __global__ void cross_entropy_backward_kernel(T* d_logits, const T* logits, const float* lse,
                                                     const int32_t* targets, int64_t v, int64_t vp, float d_loss,
                                                     int32_t ignore_index) {
  const int64_t r = blockIdx.x;
  const T* x = logits + r * vp;
  T* d = d_logits + r * vp;
  const int32_t t = targets[r];
  const float l = lse[r];
  const bool ignore = t == ignore_index, bad = !ignore && (t < 0 || t >= v);
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    float g = 0.0f;
    if (bad)
      g = NAN;
    else if (!ignore)
      g = (expf(load(x[j]) - l) - (j == t ? 1.0f : 0.0f)) * d_loss;
    d[j] = store<T>(g);
  }
  for (int64_t j = v + threadIdx.x; j < vp; j += blockDim.x) d[j] = store<T>(0.0f);
}

void cross_entropy_forward(const ops::CrossEntropyForwardArgs& a, const Context& c) {
  const int64_t n = a.logits.shape[0], vp = a.logits.shape[1], v = a.vocab ? a.vocab : vp;
  dispatch_float(a.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(cross_entropy_forward_kernel<T>, unsigned(n), row_threads(v), 0, c.stream, a.losses.ptr<float>(),
           a.lse.ptr<float>(), static_cast<const T*>(a.logits.ptr<T>()),
           static_cast<const int32_t*>(a.targets.ptr<int32_t>()), v, vp, a.ignore_index);
  });
}

void cross_entropy_backward(const ops::CrossEntropyBackwardArgs& a, const Context& c) {
  const int64_t n = a.logits.shape[0], vp = a.logits.shape[1], v = a.vocab ? a.vocab : vp;
  dispatch_float(a.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(cross_entropy_backward_kernel<T>, unsigned(n), row_threads(v), 0, c.stream, a.d_logits.ptr<T>(),
           static_cast<const T*>(a.logits.ptr<T>()), static_cast<const float*>(a.lse.ptr<float>()),
           static_cast<const int32_t*>(a.targets.ptr<int32_t>()), v, vp, a.d_loss, a.ignore_index);
  });
}

}  // namespace strata::STRATA_CUDA_NS
