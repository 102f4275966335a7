// The documented AdamW update of kernels/ops.h in double, and the op's arguments, shared
// by the reference cases (tests/ops/cases/adamw.cpp) and the CPU-only tests
// (tests/ops/test_adamw.cpp). Invariant: the reference runs on the f32
// hyperparameters the op gets, so it differs from the op only by the op's roundings.
#pragma once
#include <cmath>
#include <vector>

#include "ops.h"

namespace strata::test::reference {

struct AdamWHyper {
  float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f, grad_scale = 0.5f;
};

inline void adamw_step(const AdamWHyper& h, int64_t t, const std::vector<double>& grad, std::vector<double>& master,
                       std::vector<double>& m, std::vector<double>& v) {
  const double b1 = h.beta1, b2 = h.beta2;
  const double bias1 = 1 - std::pow(b1, double(t)), bias2 = 1 - std::pow(b2, double(t));
  for (size_t i = 0; i < master.size(); ++i) {
    double g = grad[i] * double(h.grad_scale);
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    master[i] -= double(h.lr) * (m[i] / bias1 / (std::sqrt(v[i] / bias2) + double(h.eps)) +
                                 double(h.weight_decay) * master[i]);
  }
}

inline ops::AdamWArgs adamw_args(const AdamWHyper& h, TensorView master, TensorView grad, TensorView m, TensorView v,
                                 TensorView working, int64_t step) {
  ops::AdamWArgs a;
  a.master = master;
  a.grad = grad;
  a.m = m;
  a.v = v;
  a.working = working;
  a.lr = h.lr;
  a.beta1 = h.beta1;
  a.beta2 = h.beta2;
  a.eps = h.eps;
  a.weight_decay = h.weight_decay;
  a.grad_scale = h.grad_scale;
  a.step = step;
  return a;
}

}  // namespace strata::test::reference
