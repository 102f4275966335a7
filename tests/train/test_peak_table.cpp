// The GPU peak table MFU is measured against (lib/train/plan.cpp): CUDA product names
// as cudaGetDeviceProperties reports them map to the bf16 dense peaks of the data
// sheets, the more specific name winning (H100 PCIe is not the SXM part), and an
// unknown GPU gives 0, which the GPU benchmark prints as "MFU unknown".
#include <catch2/catch.hpp>

#include "strata/plan.h"

namespace strata {
namespace {

TEST_CASE("peak table matches CUDA product names", "[train][cpu]") {
  const struct {
    const char* product;
    double bf16;
  } rows[] = {{"NVIDIA A100-SXM4-80GB", 312e12},       {"NVIDIA H100 80GB HBM3", 989e12},
              {"NVIDIA H100 PCIe", 756e12},            {"NVIDIA H200", 989e12},
              {"NVIDIA L40S", 362e12},                 {"NVIDIA GeForce RTX 4090", 165e12},
              {"NVIDIA RTX 6000 Ada Generation", 364e12}, {"NVIDIA RTX A6000", 155e12},
              {"NVIDIA GeForce GTX 1080", 0.0},        {"", 0.0}};
  for (const auto& r : rows) {
    INFO(r.product);
    CHECK(peak_flops_table(r.product, Precision::bf16) == r.bf16);
  }
  // fp32 is plain fp32, below the bf16 tensor-core peak
  CHECK(peak_flops_table("NVIDIA H100 PCIe", Precision::fp32) < 756e12);
}

}  // namespace
}  // namespace strata
