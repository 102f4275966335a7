// TieredArrays (a rank's arrays on tiers) and the tiled AdamW over them. See the header
// for the invariants; the tile pipeline keeps a slot until its writes have landed.
#include "tiered_adam.h"

#include <algorithm>
#include <filesystem>

#include "lib/core/clock.h"
#include "ops.h"
#include "strata/error.h"
#include "util.h"

namespace strata::offload {

TierArray TierArray::borrow(void* data, size_t bytes) {
  TierArray a;
  a.tier = Tier::device;
  a.data = static_cast<char*>(data);
  a.bytes = bytes;
  return a;
}

void open_offload_space(Device& device, const OffloadOptions& o, bool any_nvme, const std::string& who,
                        const std::string& subdir, size_t staging_bytes, const std::string& largest,
                        std::unique_ptr<PinnedPool>& pinned, std::unique_ptr<NvmeStore>& nvme) {
  STRATA_CHECK(o.prefetch >= 0, who << ": prefetch " << o.prefetch << " must be non-negative");
  STRATA_CHECK(o.tile_elements >= 2048 && o.tile_elements % 2048 == 0,
               who << ": tile_elements " << o.tile_elements << " must be a positive multiple of 2048");
  if (!any_nvme) return;
  STRATA_CHECK(!o.nvme_paths.empty(),
               who << ": a tier is on nvme but nvme_paths is empty; pass one directory per drive");
  for (const std::string& p : o.nvme_paths)
    STRATA_CHECK(std::filesystem::is_directory(p), who << ": NVMe path '" << p << "' does not exist or is not a directory");
  STRATA_CHECK(o.pinned_bytes >= staging_bytes, who << ": pinned budget of " << o.pinned_bytes
                                                    << " bytes is smaller than the " << largest << "; raise pinned_bytes");
  NvmeOptions no;
  no.paths = o.nvme_paths;
  for (std::string& dir : no.paths) {
    if (subdir.empty()) continue;
    dir += "/" + subdir;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    STRATA_CHECK(!ec, who << ": cannot create the directory '" << dir << "': " << ec.message());
  }
  pinned = std::make_unique<PinnedPool>(o.pinned_bytes, "offload pinned pool", true, pinned_registration_for(device));
  no.pinned = pinned.get();
  no.fault_hook = o.nvme_fault_hook;
  try {
    nvme = std::make_unique<NvmeStore>(no);
  } catch (const Error& e) {
    STRATA_FAIL(who << ": cannot open the NVMe swap space: " << e.what());
  }
  STRATA_CHECK(nvme->direct() || !o.require_direct,
               who << ": an NVMe path refuses O_DIRECT (tmpfs or a network filesystem?); "
                      "use a local drive, or set require_direct = false to accept page-cached I/O");
}

TieredArrays::TieredArrays(Device& device, const OffloadOptions& o, bool any_nvme, const std::string& subdir,
                           size_t staging_bytes, const std::string& largest_name)
    : device_(&device), options_(o) {
  if (device.kind() == DeviceKind::cuda) host_ = Device::cpu();
  open_offload_space(device, o, any_nvme, "offload", subdir, staging_bytes,
                     "largest staged array ('" + largest_name + "', " + std::to_string(staging_bytes) + " bytes)",
                     pinned_, nvme_);
}

TieredArrays::~TieredArrays() {
  for (Pending& p : pending_)
    if (p.done.valid()) p.done.wait();
}

TierArray* TieredArrays::add(Tier tier, size_t bytes, const std::string& name, const char* what) {
  TierArray& a = arrays_.emplace_back();
  a.tier = tier;
  a.bytes = bytes;
  if (tier == Tier::device) {
    a.device = Buffer(*device_, bytes, what);
    a.data = static_cast<char*>(a.device.data());
  }
  if (tier == Tier::host) {
    a.host.reset(static_cast<char*>(std::aligned_alloc(kBlockBytes, round_up(std::max<size_t>(bytes, 1), kBlockBytes))));
    STRATA_CHECK(a.host, "offload: cannot allocate " << bytes << " bytes of host memory for " << what);
    a.data = a.host.get();
  }
  if (tier == Tier::nvme) {
    STRATA_CHECK(nvme_, "offload: " << what << " placed on nvme but no NVMe space was opened");
    plan_.push_back({name, bytes});
    planned_.push_back(&a);
  }
  return &a;
}

void TieredArrays::reserve() {
  if (plan_.empty()) return;
  std::vector<uint32_t> ids;
  try {
    ids = nvme_->reserve(plan_);
  } catch (const Error& e) {
    STRATA_FAIL("offload: cannot reserve the NVMe plan: " << e.what());
  }
  for (size_t i = 0; i < ids.size(); ++i) planned_[i]->object = ids[i];
  plan_.clear();
  planned_.clear();
}

void TieredArrays::wait(std::future<void>& f) {
  const double t0 = now_seconds();
  f.get();
  stall_ += now_seconds() - t0;
}

PinnedBuffer TieredArrays::stage(size_t bytes) {
  for (;;) {
    try {
      return pinned_->allocate(bytes);
    } catch (const Error&) {
      if (pending_.empty()) throw;  // names the request, what is in use and the budget
      wait(pending_.front().done);
      pending_.erase(pending_.begin());
    }
  }
}

std::future<void> TieredArrays::read(const TierArray& a, size_t offset, void* pinned, size_t bytes) {
  return nvme_->read(a.object, offset, pinned, bytes);
}

std::future<void> TieredArrays::write(const TierArray& a, size_t offset, const void* pinned, size_t bytes) {
  return nvme_->write(a.object, offset, pinned, bytes);
}

void TieredArrays::write_behind(const TierArray& a, PinnedBuffer buf, size_t bytes) {
  std::future<void> done = nvme_->write(a.object, 0, buf.data(), bytes);
  pending_.push_back({&a, std::move(buf), std::move(done)});
}

void TieredArrays::settle(const TierArray& a) {
  for (size_t i = 0; i < pending_.size();) {
    if (pending_[i].array != &a) {
      ++i;
      continue;
    }
    wait(pending_[i].done);
    pending_.erase(pending_.begin() + long(i));
  }
}

void TieredArrays::settle_all() {
  for (Pending& p : pending_) wait(p.done);
  pending_.clear();
}

size_t TieredArrays::pinned_free() const {
  if (!pinned_) return 0;
  const PinnedPoolStats st = pinned_->stats();
  return st.bytes_reserved - st.bytes_in_use;
}

size_t TieredArrays::bytes_on(Tier t) const {
  size_t n = 0;
  for (const TierArray& a : arrays_)
    if (a.tier == t) n += a.bytes;
  return n;
}

size_t TieredArrays::pinned_high_water() const {
  return pinned_ ? std::max(pinned_peak_, pinned_->stats().bytes_high_water) : 0;
}

size_t TieredArrays::take_pinned_high_water() {
  if (!pinned_) return 0;
  const size_t h = pinned_->stats().bytes_high_water;
  pinned_peak_ = std::max(pinned_peak_, h);
  pinned_->reset_high_water();
  return h;
}

// ---- tiled AdamW

void tiled_adamw(TieredArrays& arrays, const Model& model, const AdamWOptions& adamw,
                 const std::vector<AdamShard>& shards, float lr, float grad_scale, int64_t t) {
  arrays.settle_all();  // the gradient writes behind must land before tiles read them
  TilePipeline pipe(model, arrays.device(), arrays.device_for(arrays.options().optimizer), arrays.nvme());
  std::vector<TileSpan> spans;
  size_t per_element = 0;  // pinned bytes per tile element, one slot
  int64_t largest = 0;
  for (const AdamShard& s : shards) {
    TileSpan& span = spans.emplace_back();
    span.unit = s.unit;
    span.lo = s.lo;
    span.count = s.count;
    span.grad_zero = s.grad_zero;
    const TierArray* homes[kTileArrays] = {s.master, s.grad, s.m, s.v, s.working};
    for (int a = 0; a < kTileArrays; ++a)
      if (homes[a]) span.arrays[a] = {true, homes[a]->tier, homes[a]->data, homes[a]->object};
    per_element = std::max(per_element, pipe.nvme_bytes_per_element(span));
    largest = std::max(largest, s.count);
  }
  int64_t tile = largest;  // nothing on NVMe: each shard in one piece
  if (per_element > 0) {
    const int64_t fit = int64_t(arrays.pinned_free() / (kTileSlots * per_element)) / 2048 * 2048;
    STRATA_CHECK(fit >= 2048, "offload: the pinned pool has " << arrays.pinned_free()
                                                              << " bytes free, too few for three optimizer tiles of 2048 "
                                                                 "elements; raise pinned_bytes");
    tile = std::min(arrays.options().tile_elements, fit);
  }
  Tile slots[kTileSlots];
  if (!spans.empty())
    pipe.allocate(slots, spans.front(), tile, std::min(tile, largest), [&](size_t bytes) { return arrays.stage(bytes); },
                  "ZeRO optimizer staging");
  pipe.run(slots, spans, tile, adamw, lr, grad_scale, t, [&](std::future<void>& f) { arrays.wait(f); }, [](int) {});
}

// Mirrors kernels/cpu/reduce.cpp (global_norm): same chunking and summation order.
double sum_squares_f32(const float* g, int64_t n) {
  constexpr int64_t kChunk = int64_t(1) << 16;
  constexpr int kLanes = 8;
  double total = 0;
  for (int64_t c = 0; c * kChunk < n; ++c) {
    const float* x = g + c * kChunk;
    const int64_t len = std::min(kChunk, n - c * kChunk);
    double acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= len; i += kLanes)
      for (int j = 0; j < kLanes; ++j) acc[j] += double(x[i + j]) * double(x[i + j]);
    for (int j = 0; i < len; ++i, ++j) acc[j] += double(x[i]) * double(x[i]);
    double s = 0;
    for (double a : acc) s += a;
    total += s;
  }
  return total;
}

}  // namespace strata::offload
