// strata-selftest: every op of kernels/ops.h on the GPU against the CPU backend, and
// a 20-step training run (GPT and LLaMA, fp32 and bf16) GPU vs CPU, with pass / fail
// per line (tools/selftest/gpu_vs_cpu.h; test_cuda_emu runs the same body on the
// emulated CUDA device in CI). Without a GPU (or in a build without CUDA) it prints
// the "no CUDA device" error and exits 2; the CPU path is untouched.
//   build/tools/strata-selftest [device index]
// Exit status: 0 all passed, 1 some check failed, 2 no CUDA device.
#include <cstdio>
#include <cstdlib>

#include "selftest/gpu_vs_cpu.h"
#include "strata/error.h"

int main(int argc, char** argv) {
  using namespace strata;
  const int index = argc > 1 ? std::atoi(argv[1]) : 0;
  try {
    auto gpu = Device::cuda(index);
    std::printf("strata selftest: %s, CUDA ops against the CPU backend\n", gpu->name().c_str());
    const std::vector<selftest::Check> checks = selftest::compare_ops(*gpu, /*small=*/false);
    int failures = selftest::print(checks, stdout);
    for (const std::string& op : selftest::ops_not_compared(checks)) {
      std::printf("%-24s not compared  FAIL\n", op.c_str());
      ++failures;
    }
    for (const char* preset : {"gpt", "llama"})
      for (Precision p : {Precision::fp32, Precision::bf16}) {
        const selftest::TrainConfig config{preset, p, 20, /*small=*/false};
        failures += selftest::print(config, selftest::compare_training(*gpu, config), stdout);
      }
    std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "strata selftest: %s\n", e.what());
    return 2;
  }
}
