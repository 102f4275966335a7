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
#include "tile_pipeline.h"

namespace strata::offload {

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

// Host-tier memory from aligned_alloc; on a CUDA device it is also registered
// (page-locked, cudaHostRegister), so its copies are DMA that overlaps compute.
struct HostHomeDeleter {
  bool registered = false;
  void operator()(char* p) const;
};

// One array of one unit on its tier.
struct OffloadStore::Home {
  Tier tier = Tier::host;
  Buffer device;
  std::unique_ptr<char, HostHomeDeleter> host;
  uint32_t object = 0;
  size_t bytes = 0;
  char* data() const { return tier == Tier::device ? static_cast<char*>(device.data()) : host.get(); }
};

// A device buffer of the pool and the event after its last use was enqueued (on
// compute when released by the model, on device_to_host after a write-out): a copy
// into it waits for that event first.
struct OffloadStore::Slot {
  Buffer buffer;
  std::unique_ptr<Event> idle;
  Slot() = default;
  Slot(Device& device, size_t bytes, const char* what)
      : buffer(device, bytes, what), idle(std::make_unique<Event>(device)) {}
  void* data() const { return buffer.data(); }
  size_t size() const { return buffer.size(); }
};

// A staging buffer an h2d copy still reads.
struct OffloadStore::Retired {
  PinnedBuffer stage;
  std::shared_ptr<Event> copied;
};

struct OffloadStore::UnitState {
  int64_t numel = 0;
  Home params, grads, master, m, v;
  Slot param_dev, grad_dev;  // pool buffers while acquired (param_dev also while read ahead)
  bool param_ahead = false;  // param_dev holds a read-ahead copy of the current params, not acquired
  bool writeout_final = false;  // the pending write-out is of the step's last micro-batch
  std::shared_ptr<Event> param_copied, grad_copied;  // the h2d copies into them
  std::unique_ptr<Event> grad_written;  // the d2h write-out of the gradient
  int param_refs = 0, grad_refs = 0;
  PinnedBuffer param_stage;  // NVMe read ahead
  std::future<void> param_read;
  PinnedBuffer grad_stage;  // NVMe write-out in flight
  std::future<void> grad_write;
  bool grad_zero = true;  // the tier's content is stale: the gradient is zero
  double sum_squares = 0;
};

// What one background update works from, fixed when update() starts it: the
// hyper-parameters, the tile slots, and one span per unit (with its gradient flag:
// zero_grad may clear the live flags while the update still reads gradients).
struct OffloadStore::UpdateJob {
  float lr = 0, grad_scale = 1;
  int64_t t = 0;
  int64_t tile = 0;
  std::unique_ptr<TilePipeline> pipe;
  Tile slots[kTileSlots];
  std::vector<TileSpan> spans;  // per unit, in forward order
};

}  // namespace strata::offload
