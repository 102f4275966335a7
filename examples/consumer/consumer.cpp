// A program built against an installed strata with g++ alone (no CUDA headers):
// checks that the public API links and runs.
#include <strata/strata.h>

#include <cstdio>

int main() {
  auto device = strata::Device::cpu(0, size_t(1) << 20);
  strata::Buffer buffer(*device, 4096, "consumer scratch");
  float x = strata::bf16_to_float(strata::float_to_bf16(1.00390625f));  // a tie: rounds to even
  std::printf("strata consumer: %s arena holds %zu bytes; bf16(1.00390625) = %g; CUDA devices: %d\n",
              device->name().c_str(), device->arena().bytes_live(), x, strata::cuda_device_count());
  return x == 1.0f ? 0 : 1;
}
