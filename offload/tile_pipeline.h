// The streamed AdamW over arrays on the offload tiers, the one pipeline behind both
// the OffloadStore's background update (one span per unit) and ZeRO's tiled_adamw
// (one span per rank shard). Arrays on NVMe stream through three pinned tile slots:
// tile i+1 is read while tile i is updated and tile i-1 is written.
// Invariants: a slot is reused only after its previous writes have landed, and a
// unit is reported done only after every write of its last tile has landed; AdamW is
// elementwise, so tiling is exact; one adamw_step never spans two tensors (weight
// decay is per tensor).
#pragma once
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <vector>

#include "strata/model.h"
#include "strata/offload.h"
#include "strata/optim.h"

namespace strata::offload {

inline constexpr int kTileMaster = 0, kTileGrad = 1, kTileM = 2, kTileV = 3, kTileWorking = 4, kTileArrays = 5;
inline constexpr int kTileSlots = 3;  // tiles in flight: read, update, write

// One array as the pipeline reaches it: `data` (device or host tier) or an NVMe object.
struct TileHome {
  bool present = false;
  Tier tier = Tier::host;
  char* data = nullptr;
  uint32_t object = 0;
};

// Elements [lo, lo + count) of unit `unit`: its master, grad, m, v and working arrays
// (in that order; working absent: an fp32 model whose master is the working array).
// grad_zero: no gradient arrived, the stored one is stale (read as 0).
struct TileSpan {
  int unit = 0;
  int64_t lo = 0, count = 0;
  TileHome arrays[kTileArrays];
  bool grad_zero = false;
};

// One tile: span elements [begin, begin + count). home[a] points into the array's
// home (device, host) or into buf[a] (pinned, for NVMe homes); ptr[a] is where AdamW
// reads and writes it: home[a], or on a CUDA device, when the home is the other kind
// of memory than AdamW's, a staging tile (device_stage / host_stage) copied in before
// and out after the update.
struct Tile {
  const TileSpan* span = nullptr;
  int64_t begin = 0, count = 0;
  bool last_of_unit = false;  // once its writes land, the unit is updated
  PinnedBuffer buf[kTileArrays];
  Buffer device_stage[kTileArrays];
  std::vector<char> host_stage[kTileArrays];
  char* home[kTileArrays] = {};
  char* ptr[kTileArrays] = {};
  std::vector<std::future<void>> io;
  // Staging tiles only (made by allocate): the update's end on the AdamW device's
  // stream, and the copies out to the homes; the host waits for `staged_out` before it
  // hands the homes' bytes on (NVMe write, unit done).
  std::unique_ptr<Event> updated, staged_out;
  bool out_pending = false;  // copies out were enqueued and not yet waited for
};

class TilePipeline {
 public:
  // stage: the device whose stream reaches both kinds of memory (the model's); adam:
  // where adamw_step runs; nvme: null when no array is on NVMe.
  TilePipeline(const Model& model, Device& stage, Device& adam, NvmeStore* nvme);

  size_t element_bytes(int a) const;
  // Pinned bytes per tile element of one slot for a span's NVMe arrays.
  size_t nvme_bytes_per_element(const TileSpan& shape) const;
  // Every slot's pinned buffers (NVMe arrays of `shape`, `tile` elements) from
  // `allocate`, and on a CUDA device its staging tiles of `staged` elements.
  void allocate(Tile (&slots)[kTileSlots], const TileSpan& shape, int64_t tile, int64_t staged,
                const std::function<PinnedBuffer(size_t)>& allocate, const char* what);
  // ops::adamw_step over every span in tiles of `tile` elements, spans in order.
  // wait(f) waits for one transfer; unit_done(u) follows the landing of unit u's
  // last write. The new values are on their tiers when this returns.
  void run(Tile (&slots)[kTileSlots], const std::vector<TileSpan>& spans, int64_t tile, const AdamWOptions& adamw,
           float lr, float grad_scale, int64_t t, const std::function<void(std::future<void>&)>& wait,
           const std::function<void(int)>& unit_done);

  uint64_t bytes_read() const { return bytes_read_; }  // NVMe, issued by run
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  void read(Tile& t);
  void write(Tile& t);
  void stage(Tile& t, bool in);
  void settle_staged(Tile& t);  // the host may read the tile's homes
  void update(Tile& t, const AdamWOptions& adamw, float lr, float grad_scale, int64_t step);

  const Model& model_;
  Device& stage_;
  Device& adam_;
  NvmeStore* nvme_;
  DType dtype_;
  uint64_t bytes_read_ = 0, bytes_written_ = 0;
};

}  // namespace strata::offload
