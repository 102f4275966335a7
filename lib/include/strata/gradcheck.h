// Gradient checking, public: test a unit's backward (strata/unit.h) against finite
// differences and the unit contract in one call, and the finite-difference metric it
// uses (the op tests use the same one).
// Invariant: the check never trusts the unit: every gradient is compared with the
// loss's own differences, and each contract rule is observed from outside (dx prefilled
// with garbage, backward run twice, the device arena watched for allocations).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/model.h"

namespace strata {

class Unit;

// Finite differences against an analytic gradient, per tensor:
//   relative error  ||g - g_fd|| / ||g_fd||  over the checked elements, and
//   the largest components (by |g_fd|) with g of the same sign and not zero,
// so a gradient 1% off, or one component zeroed or sign-flipped, is seen whatever its
// magnitude (no absolute floor). g_fd is a central difference in double of the loss
// (the five-point stencil: steps eps and 2 eps, error O(eps^4)).
struct GradientCheck {
  double rel_error = 0;    // ||g - g_fd|| / ||g_fd|| (0 when both are zero)
  int64_t checked = 0;     // elements differenced
  int64_t largest = 0;     // of them, the largest components sign-checked
  int64_t bad_signs = 0;   // ... with g zero or of the other sign
  int64_t first_bad = -1;  // the first such element, for the message
  double first_analytic = 0, first_numeric = 0;
  std::vector<int64_t> elements;  // the elements differenced, and their g_fd (indexed like g)
  std::vector<double> numeric;
  bool ok(double tol) const { return rel_error <= tol && bad_signs == 0; }
  // The same metrics for another analytic gradient (a planted error) against the same g_fd.
  GradientCheck against(const std::vector<double>& analytic) const;
};

// The elements `elements` of a tensor read by get and written by set (its storage
// may round what set stores; the step really taken is read back), each differenced
// with step eps; `loss` recomputes the scalar loss. Every element is restored.
GradientCheck gradient_check(const std::vector<int64_t>& elements, const std::function<double(int64_t)>& get,
                             const std::function<void(int64_t, double)>& set, const std::function<double()>& loss,
                             const std::vector<double>& analytic, double eps);

struct UnitGradCheckOptions {
  int64_t B = 2, T = 5;      // batch shape the unit runs on
  uint64_t seed = 1;         // inputs, parameters, the loss weights and the dropout keys
  double eps = 3e-2;         // finite-difference step
  // Per tensor: ||g - g_fd|| <= tolerance ||g_fd|| + 3 sqrt(k) sigma, sigma the f32
  // rounding noise of one differenced element (k of them), estimated from y.
  double tolerance = 5e-3;
  int64_t samples = 24;      // elements differenced per tensor, evenly spread (0: all)
  bool train = false;        // run with dropout active (masks fixed by the key)
};

struct UnitGradCheckReport {
  struct Tensor {
    std::string name;  // "x" (the unit's input), a side input's name, or the parameter's spec name
    GradientCheck check;
    double error = 0;        // ||g - g_fd|| over the elements differenced
    double reference = 0;    // ||g_fd||
    double noise_floor = 0;  // what of `error` f32 rounding explains
  };
  std::vector<Tensor> tensors;
  std::vector<std::string> failures;  // one line per failed rule or tensor, empty when ok
  bool ok() const { return failures.empty(); }
  std::string str() const;  // every tensor's error and every failure, one per line
};

// Checks a trunk unit (io.x -> io.y, both (B, T, config.d_model)) in f32 on `device`
// under the scalar loss L = sum(y * w) for fixed random weights w; a unit that reads
// side inputs (Unit::reads) gets random (B, T, C) ones, checked like x:
//   - dx, each side input's gradient (d_side, which must accumulate: a second
//     backward doubles it) and every parameter gradient against finite differences of L (relative
//     tolerance above the noise floor of an f32 output, see UnitGradCheckOptions);
//   - forward replayed with the same key gives the same bits;
//   - parameter gradients accumulate: a second backward doubles them;
//   - dx is assigned: prefilled garbage does not change it;
//   - forward and backward allocate nothing from the device's arena (this resets the
//     arena's high-water mark).
// Parameters are drawn from each spec's init, with ones and zeros jittered so that no
// gradient is trivially symmetric. Throws strata::Error before running anything for
// a unit this check cannot drive (one that borrows parameters, a bad shape).
UnitGradCheckReport check_unit_gradients(Unit& unit, const ModelConfig& config, Device& device,
                                         const UnitGradCheckOptions& options = {});

}  // namespace strata
