// One rank's flat arrays on the offload tiers (device arena, host RAM, NVMe through a
// pinned pool) and AdamW streamed over them in tiles. ZeRO with offload places each
// rank's shards here (master, m, v; the f32 gradient shard at stage 2+; the working
// shard at stage 3), each rank in its own NVMe subdirectory, so drives are shared
// but files are not.
// Invariants: results never depend on placement — arrays move bit for bit and AdamW
// is elementwise, so tiling it is exact; one adamw_step never spans two tensors
// (weight decay is per tensor); a pinned buffer given to write_behind is not touched
// again until its write has landed.
#pragma once
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "offload_state.h"
#include "tile_pipeline.h"
#include "strata/model.h"
#include "strata/offload.h"
#include "strata/optim.h"

namespace strata::offload {

// One flat array on one tier. `data` is memory the CPU step computes on (device or
// host tier, or borrowed memory); an NVMe array is reached only through pinned buffers.
struct TierArray {
  Tier tier = Tier::device;
  char* data = nullptr;
  size_t bytes = 0;
  uint32_t object = 0;  // NVMe object id
  Buffer device;        // owner of device-tier memory
  std::unique_ptr<char, FreeDeleter> host;  // owner of host-tier memory
  // Memory someone else owns (a model's resident buffer), used in place.
  static TierArray borrow(void* data, size_t bytes);
};

// Checks an offload placement before anything is allocated and opens its NVMe
// space: prefetch and tile size; with NVMe, the paths (exist, O_DIRECT unless
// require_direct is false) and a pinned budget of at least staging_bytes (what needs
// them is `largest`, e.g. "largest unit ('x', 8 bytes)"). Files go to <path>/<subdir>
// (created). Messages start with `who`. The OffloadStore and TieredArrays both use it.
void open_offload_space(Device& device, const OffloadOptions& o, bool any_nvme, const std::string& who,
                        const std::string& subdir, size_t staging_bytes, const std::string& largest,
                        std::unique_ptr<PinnedPool>& pinned, std::unique_ptr<NvmeStore>& nvme);

class TieredArrays {
 public:
  // Checks the placement with open_offload_space (staging_bytes: the largest array
  // one transfer stages). NVMe files go to <path>/<subdir>.
  TieredArrays(Device& device, const OffloadOptions& options, bool any_nvme, const std::string& subdir,
               size_t staging_bytes, const std::string& largest_name);
  ~TieredArrays();  // waits for writes in flight
  TieredArrays(const TieredArrays&) = delete;
  TieredArrays& operator=(const TieredArrays&) = delete;

  // Places an array (device and host now; NVMe ones are reserved together by
  // reserve(), which checks the space for the whole plan first). The pointer stays valid.
  TierArray* add(Tier tier, size_t bytes, const std::string& name, const char* what);
  void reserve();

  // Pinned memory of at least `bytes`; waits for writes behind when the pool is short.
  PinnedBuffer stage(size_t bytes);
  // NVMe transfers of [offset, offset + bytes) of `a` from / to pinned memory.
  std::future<void> read(const TierArray& a, size_t offset, void* pinned, size_t bytes);
  std::future<void> write(const TierArray& a, size_t offset, const void* pinned, size_t bytes);
  // Writes buf's first `bytes` to the whole of `a` asynchronously; buf is kept until it lands.
  void write_behind(const TierArray& a, PinnedBuffer buf, size_t bytes);
  // Waits for the writes behind to `a` (before it is read again), or to every array.
  void settle(const TierArray& a);
  void settle_all();

  // Waits for one transfer, counting the stall.
  void wait(std::future<void>& f);
  size_t pinned_free() const;  // 0 without NVMe
  NvmeStore* nvme() const { return nvme_.get(); }  // null without NVMe

  // Bytes placed per tier (logical array sizes) and the pinned pool's high water:
  // since construction, or (take_) since the last take, which starts a new window.
  size_t bytes_on(Tier t) const;
  size_t pinned_high_water() const;
  size_t take_pinned_high_water();
  double stall_seconds() const { return stall_; }  // time waiting on NVMe since construction
  const OffloadOptions& options() const { return options_; }
  Device& device() const { return *device_; }
  // The device whose ops reach arrays on `tier` (host and NVMe staging: a host CPU
  // device when the rank's device is a CUDA one; otherwise the rank's device).
  Device& device_for(Tier tier) const { return tier == Tier::device || !host_ ? *device_ : *host_; }

 private:
  struct Pending {
    const TierArray* array;
    PinnedBuffer buf;
    std::future<void> done;
  };
  Device* device_;
  std::unique_ptr<Device> host_;  // CUDA devices: runs ops on host memory
  OffloadOptions options_;
  std::unique_ptr<PinnedPool> pinned_;
  size_t pinned_peak_ = 0;  // the highest window taken so far
  std::unique_ptr<NvmeStore> nvme_;
  std::deque<TierArray> arrays_;  // deque: add() keeps earlier pointers valid
  std::vector<NvmeObjectSpec> plan_;
  std::vector<TierArray*> planned_;
  std::vector<Pending> pending_;
  double stall_ = 0;
};

// Elements [lo, lo + count) of unit `unit` (a rank's shard), the arrays AdamW reads
// and writes for them. working == nullptr: the model is fp32 and master is the
// working array. grad_zero: no gradient arrived, the stored one is stale (read as 0).
struct AdamShard {
  int unit = 0;
  int64_t lo = 0, count = 0;
  TierArray* master = nullptr;
  const TierArray* grad = nullptr;
  TierArray* m = nullptr;
  TierArray* v = nullptr;
  TierArray* working = nullptr;
  bool grad_zero = false;
};

// ops::adamw_step over every shard, arrays where they live, through TilePipeline
// (tile_pipeline.h); the new values are on their tiers when this returns. AdamW runs on
// arrays.device_for(optimizer tier); on a CUDA device an array whose home is the
// other kind of memory is copied through a staging tile of AdamW's kind.
void tiled_adamw(TieredArrays& arrays, const Model& model, const AdamWOptions& adamw,
                 const std::vector<AdamShard>& shards, float lr, float grad_scale, int64_t t);

// Sum of squares of n f32 values, bitwise ops::global_norm's per-buffer sum on the
// CPU backend (chunks of 2^16 elements, eight double lanes per chunk summed in lane
// order, chunks summed in order): a norm from buffers that are never all in memory.
double sum_squares_f32(const float* x, int64_t n);

}  // namespace strata::offload
