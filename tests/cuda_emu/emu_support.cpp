// The emulated kernels' launch context, the emulator-vs-CPU comparison, and the
// judgement of a training run on the emulated device against a CPU one.
#include "emu_support.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <sstream>

namespace strata::test {

const cuda_emu::Context& emu() {
  // The emulated CUDA device's own context (kernels/cuda/emu/emu_runtime.cpp).
  static const std::unique_ptr<Device> device = Device::cuda();
  static const cuda_emu::Context context = cuda_emu::context(device->stream());
  return context;
}

void expect_match(const std::string& what, const HostTensor& got, const HostTensor& want, double slack) {
  REQUIRE(got.numel() == want.numel());
  double rtol = 1e-5, atol = 1e-5;
  if (want.dtype() == DType::bf16) rtol = 1.0 / 128, atol = 1.0 / 256;
  if (want.dtype() == DType::f16) rtol = 1.0 / 1024, atol = 1.0 / 2048;
  rtol *= slack;
  atol *= slack;
  const std::vector<double> g = got.values(), w = want.values();
  // Inputs are O(1): an exactly cancelling result (0 on one side, 1e-7 on the other)
  // is judged against that scale, not against 0.
  double scale = 1;
  for (double v : w)
    if (std::isfinite(v)) scale = std::max(scale, std::fabs(v));
  size_t bad = 0, first = 0;
  double max_err = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double err = std::fabs(g[i] - w[i]);
    const bool ok = err <= rtol * std::fabs(w[i]) + atol * scale || (std::isnan(g[i]) && std::isnan(w[i])) ||
                    (std::isinf(w[i]) && g[i] == w[i]);
    if (!ok && !bad++) first = i;
    if (std::isfinite(err)) max_err = std::max(max_err, err);
  }
  if (bad) {
    std::ostringstream s;
    s << what << " " << dtype_name(want.dtype()) << ": " << bad << " of " << g.size()
      << " elements differ from the CPU backend; first at " << first << ": emulated CUDA " << g[first]
      << ", CPU " << w[first] << "; max error " << max_err << " (scale " << scale << ")";
    FAIL(s.str());
  }
  SUCCEED();
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d2 = 0, n2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n2 += double(b[i]) * b[i];
  }
  return std::sqrt(d2 / n2);
}

void check_training_matches(const std::vector<float>& gpu_losses, const std::vector<float>& cpu_losses,
                            const std::vector<float>& gpu_weights, const std::vector<float>& cpu_weights, Precision p) {
  REQUIRE(gpu_losses.size() == cpu_losses.size());
  REQUIRE(!cpu_losses.empty());
  const bool fp32 = p == Precision::fp32;
  double loss_diff = 0;
  for (size_t s = 0; s < cpu_losses.size(); ++s)
    loss_diff = std::max(loss_diff, double(std::fabs(gpu_losses[s] - cpu_losses[s])));
  CHECK(cpu_losses.back() < cpu_losses.front());
  CHECK(loss_diff <= (fp32 ? 1e-5 : 1e-2));
  const double weight_diff = relative_l2(gpu_weights, cpu_weights);
  CHECK(weight_diff <= (fp32 ? 1e-4 : 3e-2));
  if (fp32) CHECK(weight_diff > 0);
}

}  // namespace strata::test
