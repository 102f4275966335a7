// strata-selftest: every op of kernels/ops.h on the GPU against the CPU backend, and
// a 20-step training run (GPT and LLaMA, fp32 and bf16) GPU vs CPU, with pass / fail
// per line, printed as each check completes (tools/selftest/gpu_vs_cpu.h; test_cuda_emu
// runs the same body on the emulated CUDA device in CI). Each op family and each
// training run is caught on its own: one that throws is a FAIL line, the rest still
// run. Without a GPU (or in a build without CUDA) it prints the "no CUDA device" error
// and exits 2; the CPU path is untouched.
//   build/tools/strata-selftest [--ops-only | --train-only] [--only FAMILY,...] [--list] [device index]
//   STRATA_CUDA_SYNC=1 strata-selftest --only attention   synchronize after every kernel
//                                                          launch: a fault names its kernel
// Exit status: 0 all passed, 1 some check failed, 2 no CUDA device or bad arguments.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>

#include "selftest/gpu_vs_cpu.h"
#include "strata/error.h"

namespace {
void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: strata-selftest [--ops-only | --train-only] [--only FAMILY,...] [--list] [device index]\n"
               "Every op on CUDA device N (default 0) against the CPU backend, then 20-step training runs.\n"
               "  --ops-only        skip the training runs\n"
               "  --train-only      only the training runs\n"
               "  --only F,...      only these op families (and no training runs); --list names them\n"
               "  STRATA_CUDA_SYNC=1  synchronize after each kernel launch, so a fault names its kernel\n"
               "Exit status: 0 all passed, 1 some check failed, 2 no CUDA device or bad arguments.\n");
}
}  // namespace

int main(int argc, char** argv) {
  using namespace strata;
  int index = 0;
  bool ops_only = false, train_only = false;
  selftest::CompareOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return usage(stdout), 0;
    if (arg == "--list") {
      for (const std::string& f : selftest::op_families()) std::printf("%s\n", f.c_str());
      return 0;
    }
    if (arg == "--ops-only") {
      ops_only = true;
    } else if (arg == "--train-only") {
      train_only = true;
    } else if (arg == "--only" && i + 1 < argc) {
      std::stringstream list(argv[++i]);
      for (std::string f; std::getline(list, f, ',');) options.families.push_back(f);
      ops_only = true;
    } else if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos) {
      index = std::atoi(arg.c_str());
    } else {
      std::fprintf(stderr, "strata-selftest: unexpected argument '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (ops_only && train_only) {
    std::fprintf(stderr, "strata-selftest: --train-only excludes --ops-only and --only\n");
    return 2;
  }
  for (const std::string& f : options.families)
    if (std::find(selftest::op_families().begin(), selftest::op_families().end(), f) == selftest::op_families().end()) {
      std::fprintf(stderr, "strata-selftest: --only: no op family '%s'; --list names them\n", f.c_str());
      return 2;
    }
  std::unique_ptr<Device> gpu;
  try {
    gpu = Device::cuda(index);
  } catch (const Error& e) {
    std::fprintf(stderr, "strata selftest: %s\n", e.what());
    return 2;
  }
  const char* sync = std::getenv("STRATA_CUDA_SYNC");
  std::printf("strata selftest: %s, CUDA ops against the CPU backend%s\n", gpu->name().c_str(),
              sync && *sync && std::strcmp(sync, "0") ? " (STRATA_CUDA_SYNC: synchronized after each launch)" : "");
  std::fflush(stdout);
  options.on_check = [](const selftest::Check& c) { selftest::print(c, stdout); };
  int failures = 0;
  if (!train_only) {
    const std::vector<selftest::Check> checks = selftest::compare_ops(*gpu, options);
    for (const selftest::Check& c : checks) failures += !c.pass();
    if (options.families.empty())
      for (const std::string& op : selftest::ops_not_compared(checks)) {
        std::printf("%-24s not compared  FAIL\n", op.c_str());
        ++failures;
      }
  }
  if (!ops_only)
    for (const char* preset : {"gpt", "llama"})
      for (Precision p : {Precision::fp32, Precision::bf16}) {
        const selftest::TrainConfig config{preset, p, 20, /*small=*/false};
        try {
          failures += selftest::print(config, selftest::compare_training(*gpu, config), stdout);
        } catch (const std::exception& e) {
          std::printf("train %-5s %-4s FAIL  %s\n", preset, precision_name(p), e.what());
          ++failures;
        }
        std::fflush(stdout);
      }
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
