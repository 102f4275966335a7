// Support for running the emulated CUDA kernels against the CPU backend: the launch
// context of the emulated CUDA device, a comparison at the storage precision, and
// the judgement of training runs against the CPU device.
// Invariant: every comparison is between the emulated CUDA launcher and the CPU
// backend given identical inputs (copies of the same HostTensors); neither result is
// ever hard-coded.
#pragma once
#include <string>
#include <vector>

#include "cuda/cuda_ops.h"
#include "strata/model.h"
#include "support/host_tensor.h"

namespace strata::test {

// The emulated CUDA device's launch context (its scratch is host memory).
const cuda_emu::Context& emu();

// got (emulated CUDA) against want (CPU backend): |g - w| <= rtol |w| + atol max(1, max|w|),
// with rtol / atol at the storage precision of want's dtype (f32 results: 1e-5).
// NaN must meet NaN and Inf the same Inf.
void expect_match(const std::string& what, const HostTensor& got, const HostTensor& want, double slack = 1.0);

// ||a - b|| / ||b|| of two runs' weights (selftest judges training runs by it).
double relative_l2(const std::vector<float>& a, const std::vector<float>& b);

// A training run on the emulated CUDA device against the same run on a CPU device,
// judged with selftest::compare_training's tolerances: per-step losses and the
// relative L2 of the final weights; the CPU run must learn, and in fp32 the two must
// differ (two backends ran, not one twice; in bf16 tiny runs may round alike).
void check_training_matches(const std::vector<float>& gpu_losses, const std::vector<float>& cpu_losses,
                            const std::vector<float>& gpu_weights, const std::vector<float>& cpu_weights, Precision p);

// Float dtypes as a Catch GENERATE-able list, and their names.
inline const std::vector<DType> kFloatTypes = {DType::f32, DType::bf16, DType::f16};

}  // namespace strata::test
