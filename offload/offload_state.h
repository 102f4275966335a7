// The OffloadStore's per-unit state, shared by its paging (offload_store.cpp) and
// its optimizer step (offload_adam.cpp).
// Invariant: a Home's bytes are the unit's array on that tier and nowhere else;
// NVMe homes are touched only through pinned staging buffers.
#pragma once
#include <cstdlib>
#include <future>
#include <memory>
#include <vector>

#include "offload_store.h"

namespace strata::offload {

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

// One array of one unit on its tier.
struct OffloadStore::Home {
  Tier tier = Tier::host;
  Buffer device;
  std::unique_ptr<char, FreeDeleter> host;
  uint32_t object = 0;
  size_t bytes = 0;
  char* data() const { return tier == Tier::device ? static_cast<char*>(device.data()) : host.get(); }
};

struct OffloadStore::UnitState {
  int64_t numel = 0;
  Home params, grads, master, m, v;
  Buffer param_dev, grad_dev;  // pool buffers while acquired
  int param_refs = 0, grad_refs = 0;
  PinnedBuffer param_stage;  // NVMe read ahead
  std::future<void> param_read;
  PinnedBuffer grad_stage;  // NVMe write-out in flight
  std::future<void> grad_write;
  bool grad_zero = true;  // the tier's content is stale: the gradient is zero
  double sum_squares = 0;
};

// One tile of the streamed optimizer step: elements [begin, begin + count) of a
// unit's master, grad, m, v and working arrays (in that order); home[a] points into
// the array's home (device, host) or into buf[a] (pinned, for NVMe homes). ptr[a] is
// where AdamW reads and writes it: home[a], or on a CUDA device, when the home is
// device memory and AdamW runs on the host or the reverse, a staging tile of the
// other kind (device_stage / host_stage) copied in before and out after the update.
struct OffloadStore::Tile {
  int unit = -1;
  int64_t begin = 0, count = 0;
  bool last_of_unit = false;  // once its writes land, the unit is updated
  PinnedBuffer buf[5];
  Buffer device_stage[5];
  std::vector<char> host_stage[5];
  char* home[5] = {};
  char* ptr[5] = {};
  std::vector<std::future<void>> io;
};

inline constexpr int kUpdateSlots = 3;  // tiles in flight: read, update, write

// What one background update works from, fixed when update() starts it: the
// hyper-parameters, the tile slots, and which units had no gradient this step
// (zero_grad may clear the live flags while the update still reads gradients).
struct OffloadStore::UpdateJob {
  float lr = 0, grad_scale = 1;
  int64_t t = 0;
  int64_t tile = 0;
  uint64_t bytes_read = 0, bytes_written = 0;  // NVMe, issued by this update
  Tile slots[kUpdateSlots];
  std::vector<char> grad_zero;  // per unit
};

}  // namespace strata::offload
