// Two emulated CUDA devices in one process (kernels/cuda/emu/emu_runtime.cpp): each
// allocation of a device's arena and each launch on its streams is recorded on that
// device, whichever device the calling thread had current, because every runtime call
// and op runs under its device's guard. With the guard off and the wrong device
// current, the emulator reports both, so the first test's "nothing misplaced" can fail.
#include <catch2/catch.hpp>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cuda/runtime.h"
#include "offload/offload_store.h"
#include "strata/lora.h"
#include "strata/ops.h"
#include "strata/train.h"
#include "train/train_support.h"

namespace strata::test {
namespace {

using Catch::Contains;
namespace rt = cuda_runtime;

// Turns the device guard off for one scope, with `device` current on this thread.
struct WrongDeviceScope {
  explicit WrongDeviceScope(int device) : before(rt::current_device()) {
    rt::set_device_guard(false);
    rt::set_current_device(device);
  }
  ~WrongDeviceScope() {
    rt::set_device_guard(true);
    rt::set_current_device(before);
  }
  int before;
};

struct DeviceRun {
  std::vector<float> losses;
  size_t parameters = 0, parameters_elsewhere = 0;  // allocations recorded on another device
  std::string error;
};

// Three resident steps of a tiny GPT on `device`, from a thread whose current device is 0.
void train_on(Device& device, DeviceRun& run) {
  try {
    const ModelConfig c = tiny_config("gpt");
    Model m(c, device, Precision::bf16, 5);
    TrainOptions o;
    o.adamw.lr = 1e-2f;
    Trainer t(m, o);
    for (int s = 0; s < 3; ++s) {
      RandomBatch b(2, 8, c.vocab_size, 1000 + uint64_t(s));
      run.losses.push_back(t.train_step({b.batch()}).loss);
    }
    for (const ParamInfo& p : m.parameters()) {
      ++run.parameters;
      if (rt::allocation_device(m.parameter(p.name).data) != device.index()) ++run.parameters_elsewhere;
    }
  } catch (const std::exception& e) {
    run.error = e.what();
  }
}

TEST_CASE("cuda_emu: two emulated devices in one process keep their own allocations and launches",
          "[cuda_emu][device]") {
  REQUIRE(cuda_device_count() == rt::kEmulatedDevices);
  rt::take_misplaced();  // what earlier cases left
  auto gpu0 = Device::cuda(0), gpu1 = Device::cuda(1);
  const rt::DeviceRecord before0 = rt::device_record(0), before1 = rt::device_record(1);
  DeviceRun run0, run1;
  // Both from threads whose current device is 0: device 1's work must still land on it.
  std::thread t0([&] { train_on(*gpu0, run0); }), t1([&] { train_on(*gpu1, run1); });
  t0.join();
  t1.join();
  REQUIRE(run0.error == "");
  REQUIRE(run1.error == "");
  const rt::DeviceRecord after0 = rt::device_record(0), after1 = rt::device_record(1);
  const std::vector<std::string> misplaced = rt::take_misplaced();
  for (const std::string& m : misplaced) UNSCOPED_INFO(m);
  CHECK(misplaced.empty());
  CHECK(after0.allocations > before0.allocations);
  CHECK(after1.allocations > before1.allocations);
  CHECK(after0.launches > before0.launches);
  CHECK(after1.launches > before1.launches);
  REQUIRE(run0.parameters > 0);
  CHECK(run0.parameters_elsewhere == 0);
  CHECK(run1.parameters == run0.parameters);
  CHECK(run1.parameters_elsewhere == 0);
  // The same seeded run on each device: shared or crossed buffers would not stay equal.
  REQUIRE(run0.losses.size() == 3);
  CHECK(run0.losses == run1.losses);
}

TEST_CASE("cuda_emu: an allocation or launch made with the other device current is reported",
          "[cuda_emu][device]") {
  rt::take_misplaced();
  auto gpu0 = Device::cuda(0);
  {
    WrongDeviceScope wrong(1);
    Buffer b(*gpu0, 4096, "misplaced test");
    CHECK(rt::allocation_device(b.data()) == 1);  // cudaMalloc allocates on the current device
    ops::fill_zero(TensorView(b.data(), DType::f32, {16}, gpu0.get()), gpu0->stream());
    const std::vector<std::string> misplaced = rt::take_misplaced();
    REQUIRE(misplaced.size() == 2);
    CHECK_THAT(misplaced[0], Contains("bytes for cuda:0's arena ran with cuda:1 current"));
    CHECK_THAT(misplaced[1], Contains("zero_kernel") && Contains("on cuda:0's stream ran with cuda:1 current"));
  }
  gpu0.reset();  // its arena keeps the segment cudaMalloc placed on device 1
  rt::take_misplaced();  // the segment's free ran under the wrong device too
  // The same calls under the guard, from a thread with device 1 current, land on device 0.
  gpu0 = Device::cuda(0);
  rt::set_current_device(1);
  {
    Buffer b(*gpu0, 4096, "guarded test");
    CHECK(rt::allocation_device(b.data()) == 0);
    ops::fill_zero(TensorView(b.data(), DType::f32, {16}, gpu0.get()), gpu0->stream());
  }
  rt::set_current_device(0);
  CHECK(rt::take_misplaced().empty());
}

// The arena sub-allocates segments it keeps (ArenaMemory::segments), so a buffer made
// and freed every step reuses its block.
TEST_CASE("cuda_emu: steps after the first make no runtime allocation or free", "[cuda_emu][device]") {
  const std::string mode = GENERATE("resident", "host offload", "lora");
  INFO(mode);
  auto gpu = Device::cuda(0);
  const ModelConfig c = tiny_config("gpt");
  Model m(c, *gpu, Precision::fp32, 5);
  std::unique_ptr<Lora> lora;
  if (mode == "lora") {
    LoraOptions lo;
    lo.rank = 4, lo.seed = 3;
    lora = std::make_unique<Lora>(m, lo);
  }
  offload::OffloadOptions off;
  off.params = off.grads = off.optimizer = offload::Tier::host;
  off.pinned_bytes = size_t(1) << 20;
  TrainOptions o;
  std::unique_ptr<Trainer> t =
      mode == "host offload" ? std::make_unique<Trainer>(m, o, off) : std::make_unique<Trainer>(m, o);
  RandomBatch b(2, 8, c.vocab_size, 1000);
  t->train_step({b.batch()});
  const rt::DeviceRecord warm = rt::device_record(0);
  const rt::HostRecord warm_host = rt::host_record();
  for (int s = 0; s < 2; ++s) t->train_step({b.batch()});
  const rt::DeviceRecord after = rt::device_record(0);
  const rt::HostRecord after_host = rt::host_record();
  CHECK(after.allocations - warm.allocations == 0);
  CHECK(after.frees - warm.frees == 0);
  CHECK(after.scratch_allocations - warm.scratch_allocations == 0);
  CHECK(after_host.registrations - warm_host.registrations == 0);
  CHECK(after_host.unregistrations - warm_host.unregistrations == 0);
}

TEST_CASE("cuda_emu: the emulator has two devices and refuses a third by name", "[cuda_emu][device]") {
  REQUIRE_THROWS_WITH(Device::cuda(2), Contains("no CUDA device: cuda:2") && Contains("2 devices"));
}

}  // namespace
}  // namespace strata::test
