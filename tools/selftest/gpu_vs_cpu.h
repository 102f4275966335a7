// The body of strata-selftest, shared with test_cuda_emu: every op of kernels/ops.h
// (forward and backward, every dtype it takes) and a 20-step training run, each on a
// CUDA device against the CPU backend. Every op family runs the shared op table's
// cases (tests/ops/op_table.h) through compare_case. On a GPU machine strata-selftest
// runs it on the hardware; in CI test_cuda_emu runs the same code on the emulated device.
// Invariant: both sides get bitwise the same inputs (made once on the host and copied
// to each device), so a failure is a disagreement between backends, never between inputs.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "ops/op_table.h"
#include "strata/device.h"
#include "strata/model.h"
#include "support/host_tensor.h"

namespace strata::selftest {

// One comparison: the largest difference, relative to max(1, max |cpu|), against
// the tolerance of the result's dtype; or a family that threw (`failure` says what).
struct Check {
  std::string op;     // the name in ops::op_registry(): "matmul_backward"; the family when it threw
  std::string what;   // the output and variant: "d_weight (f32)"
  std::string dtype;  // of the op's main operand
  double error = 0;
  double tolerance = 0;
  std::string failure;  // the exception's message, when the family threw
  bool pass() const { return failure.empty() && error <= tolerance; }
};

// The op families of compare_ops, in table order: "matmul", "embedding", "norms", ...
const std::vector<std::string>& op_families();

struct CompareOptions {
  bool small = false;  // shrink the shapes of the hardware-only tiled-GEMM check
  std::vector<std::string> families;  // the op_families() to run; empty: all
  // Called with each check as soon as it is made (strata-selftest prints it then, so
  // a hang or a crash shows where it happened).
  std::function<void(const Check&)> on_check;
};

// Every op of ops::op_registry() that both devices implement, over a few shapes; the
// checks come back in table order. Each family and dtype runs in its own try/catch: one
// that throws (a failed launch, a cuBLAS error) is one failed check, and the rest run.
std::vector<Check> compare_ops(Device& gpu, const CompareOptions& options);
std::vector<Check> compare_ops(Device& gpu, bool small);

// One output of a shared reference case (tests/ops/cases) run on both backends.
struct CaseOutput {
  std::string what;
  test::HostTensor cpu, gpu;  // the CPU backend's result, the GPU's (copied back)
};
// Runs reference case c once on the CPU backend, recording its outputs, then on gpu
// with device copies of bitwise the same inputs (made when the case first names a
// tensor, reused while its host bytes are unchanged, so aliases and outputs feeding
// later ops stay on the device); the outputs in the case's order.
std::vector<CaseOutput> compare_case(const test::OpCase& c, Device& gpu, DType dtype,
                                     const std::vector<int64_t>& shape);

// The ops of the registry that compare_ops covers none of (should be empty).
std::vector<std::string> ops_not_compared(const std::vector<Check>& checks);

// A training run of `steps` steps from one seed on each device.
struct TrainConfig {
  std::string preset = "gpt";  // "gpt" (LayerNorm, GELU, learned positions) or "llama" (RMSNorm, SwiGLU, RoPE)
  Precision precision = Precision::fp32;
  int steps = 20;
  bool small = true;  // a tiny model (the emulator); false: a few-million-parameter one
};
struct TrainComparison {
  std::vector<float> loss_cpu, loss_gpu;  // per step
  double max_loss_diff = 0;    // max over steps of |loss_gpu - loss_cpu|
  double weight_diff = 0;      // ||w_gpu - w_cpu|| / ||w_cpu|| over every final parameter
  double max_weight_diff = 0;  // max |w_gpu - w_cpu| (reported, not judged: see compare_training)
  double loss_tolerance = 0, weight_tolerance = 0;  // for this precision
  bool pass() const { return max_loss_diff <= loss_tolerance && weight_diff <= weight_tolerance; }
};
TrainComparison compare_training(Device& gpu, const TrainConfig& config);

// Prints one line per check / run; returns the number of failures.
void print(const Check& check, std::FILE* out);
int print(const std::vector<Check>& checks, std::FILE* out);
int print(const TrainConfig& config, const TrainComparison& r, std::FILE* out);

}  // namespace strata::selftest
