// TieredArrays (a rank's arrays on tiers) and the tiled AdamW over them. See the header
// for the invariants; the tile pipeline keeps a slot until its writes have landed.
#include "tiered_adam.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "../lib/optim/adamw_args.h"
#include "ops.h"
#include "strata/error.h"
#include "util.h"

namespace strata::offload {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

TierArray TierArray::borrow(void* data, size_t bytes) {
  TierArray a;
  a.tier = Tier::device;
  a.data = static_cast<char*>(data);
  a.bytes = bytes;
  return a;
}

TieredArrays::TieredArrays(Device& device, const OffloadOptions& o, bool any_nvme, const std::string& subdir,
                           size_t staging_bytes, const std::string& largest_name)
    : device_(&device), options_(o) {
  if (device.kind() == DeviceKind::cuda) host_ = Device::cpu();
  STRATA_CHECK(o.prefetch >= 0, "offload: prefetch " << o.prefetch << " must be non-negative");
  STRATA_CHECK(o.tile_elements >= 2048 && o.tile_elements % 2048 == 0,
               "offload: tile_elements " << o.tile_elements << " must be a positive multiple of 2048");
  if (!any_nvme) return;
  STRATA_CHECK(!o.nvme_paths.empty(), "offload: a tier is on nvme but nvme_paths is empty; pass one directory per drive");
  for (const std::string& p : o.nvme_paths)
    STRATA_CHECK(std::filesystem::is_directory(p), "offload: NVMe path '" << p << "' does not exist or is not a directory");
  STRATA_CHECK(o.pinned_bytes >= staging_bytes,
               "offload: pinned budget of " << o.pinned_bytes << " bytes is smaller than the largest staged array ('"
                                            << largest_name << "', " << staging_bytes << " bytes); raise pinned_bytes");
  NvmeOptions no;
  for (const std::string& p : o.nvme_paths) {
    std::string dir = subdir.empty() ? p : p + "/" + subdir;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    STRATA_CHECK(!ec, "offload: cannot create the directory '" << dir << "': " << ec.message());
    no.paths.push_back(dir);
  }
  pinned_ = std::make_unique<PinnedPool>(o.pinned_bytes, "offload pinned pool", true,
                                           pinned_registration_for(device));
  no.pinned = pinned_.get();
  try {
    nvme_ = std::make_unique<NvmeStore>(no);
  } catch (const Error& e) {
    STRATA_FAIL("offload: cannot open the NVMe swap space: " << e.what());
  }
  STRATA_CHECK(nvme_->direct() || !o.require_direct,
               "offload: an NVMe path refuses O_DIRECT (tmpfs or a network filesystem?); "
               "use a local drive, or set require_direct = false to accept page-cached I/O");
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

size_t TieredArrays::pinned_high_water() const { return pinned_ ? pinned_->stats().bytes_high_water : 0; }

// ---- tiled AdamW

namespace {

constexpr int kMaster = 0, kGrad = 1, kM = 2, kV = 3, kWorking = 4, kArrays = 5;
constexpr int kSlots = 3;

const TierArray* array_of(const AdamShard& s, int a) {
  const TierArray* arrays[kArrays] = {s.master, s.grad, s.m, s.v, s.working};
  return arrays[a];
}

// home[a]: the tile in its array's home (device, host) or in buf[a] (pinned, NVMe
// homes); ptr[a]: where AdamW reads and writes it, home[a] or a staging tile of the
// other kind of memory (device_stage / host_stage), copied in before and out after.
struct Tile {
  const AdamShard* shard = nullptr;
  int64_t begin = 0, count = 0;  // shard elements [begin, begin + count)
  PinnedBuffer buf[kArrays];
  Buffer device_stage[kArrays];
  std::vector<char> host_stage[kArrays];
  char* home[kArrays] = {};
  char* ptr[kArrays] = {};
  std::vector<std::future<void>> io;
};

class TilePipeline {
 public:
  TilePipeline(TieredArrays& arrays, const Model& model, size_t ds)
      : arrays_(arrays), model_(model), ds_(ds), adam_(arrays.device_for(arrays.options().optimizer)) {}

  size_t element_bytes(int a) const { return a == kWorking ? ds_ : 4; }

  void read(Tile& t) {
    const AdamShard& s = *t.shard;
    for (int a = 0; a < kArrays; ++a) {
      const TierArray* h = array_of(s, a);
      if (!h) continue;
      const size_t at = size_t(t.begin) * element_bytes(a), bytes = size_t(t.count) * element_bytes(a);
      t.home[a] = h->tier == Tier::nvme ? static_cast<char*>(t.buf[a].data()) : h->data + at;
      t.ptr[a] = t.device_stage[a].data()      ? static_cast<char*>(t.device_stage[a].data())
                 : !t.host_stage[a].empty() ? t.host_stage[a].data()
                                            : t.home[a];
      if (a == kGrad && s.grad_zero) {
        if (adam_.kind() == DeviceKind::cuda)
          ops::fill_zero(TensorView(t.ptr[a], DType::f32, {t.count}, &adam_), adam_.stream());
        else
          std::memset(t.ptr[a], 0, bytes);
      } else if (h->tier == Tier::nvme && a == kWorking) {
        std::memset(t.home[a], 0, bytes);  // fully rewritten from master; the padding stays 0
      } else if (h->tier == Tier::nvme) {
        t.io.push_back(arrays_.read(*h, at, t.home[a], bytes));
      }
    }
  }

  void write(Tile& t) {
    for (int a : {kMaster, kM, kV, kWorking}) {
      const TierArray* h = array_of(*t.shard, a);
      if (h && h->tier == Tier::nvme)
        t.io.push_back(arrays_.write(*h, size_t(t.begin) * element_bytes(a), t.home[a], size_t(t.count) * element_bytes(a)));
    }
  }

  // On a CUDA device, arrays whose home is not the kind of memory AdamW runs in get
  // staging tiles of `tile` elements in every slot.
  void allocate_staging(Tile (&slots)[kSlots], const AdamShard& shape, int64_t tile) {
    if (arrays_.device().kind() != DeviceKind::cuda) return;
    const bool adam_on_device = adam_.kind() == DeviceKind::cuda;
    for (int a = 0; a < kArrays; ++a) {
      const TierArray* h = array_of(shape, a);
      if (!h || (h->tier == Tier::device) == adam_on_device) continue;
      const size_t bytes = size_t(tile) * element_bytes(a);
      for (Tile& s : slots) {
        if (adam_on_device)
          s.device_stage[a] = Buffer(arrays_.device(), bytes, "ZeRO optimizer staging");
        else
          s.host_stage[a].resize(bytes);
      }
    }
  }

  // Copies the staged arrays between home and staging: in, every array read (a zeroed
  // gradient stays as it is); out, those AdamW wrote.
  void stage(const Tile& t, bool in) {
    Stream& s = arrays_.device().stream();  // the one that reaches both kinds of memory
    bool any = false;
    for (int a = 0; a < kArrays; ++a) {
      if (t.ptr[a] == t.home[a] || (a == kGrad && (!in || t.shard->grad_zero))) continue;
      const size_t bytes = size_t(t.count) * element_bytes(a);
      if (in)
        s.copy(t.ptr[a], t.home[a], bytes);
      else
        s.copy(t.home[a], t.ptr[a], bytes);
      any = true;
    }
    if (any) s.synchronize();
  }

  void update(const Tile& t, const AdamWOptions& adamw, float lr, float grad_scale, int64_t step) {
    Device& dev = adam_;
    const AdamShard& s = *t.shard;
    const DType dt = precision_dtype(model_.precision());
    const int64_t lo = s.lo + t.begin, hi = lo + t.count;  // unit coordinates
    for (const ParamInfo& p : model_.parameters()) {
      if (p.unit != s.unit) continue;
      const int64_t begin = std::max(lo, p.offset), end = std::min(hi, p.offset + p.numel());
      if (begin >= end) continue;
      const int64_t at = begin - lo, n = end - begin;
      auto f32 = [&](int a) { return TensorView(t.ptr[a] + size_t(at) * 4, DType::f32, {n}, &dev); };
      ops::AdamWArgs args = adamw_args(adamw, &p, lr, grad_scale, step);
      args.master = f32(kMaster);
      args.grad = f32(kGrad);
      args.m = f32(kM);
      args.v = f32(kV);
      if (s.working) args.working = TensorView(t.ptr[kWorking] + size_t(at) * ds_, dt, {n}, &dev);
      ops::adamw_step(args, dev.stream());
    }
    dev.stream().synchronize();
  }

  void settle(Tile& t) {
    for (auto& f : t.io) arrays_.wait(f);
    t.io.clear();
  }

 private:
  TieredArrays& arrays_;
  const Model& model_;
  size_t ds_;
  Device& adam_;  // where adamw_step runs
};

}  // namespace

void tiled_adamw(TieredArrays& arrays, const Model& model, const AdamWOptions& adamw,
                 const std::vector<AdamShard>& shards, float lr, float grad_scale, int64_t t) {
  arrays.settle_all();  // the gradient writes behind must land before tiles read them
  const size_t ds = dtype_size(precision_dtype(model.precision()));
  TilePipeline pipe(arrays, model, ds);
  size_t per_element = 0;  // pinned bytes per tile element, one slot
  int64_t largest = 0;
  for (const AdamShard& s : shards) {
    size_t e = 0;
    for (int a = 0; a < kArrays; ++a)
      if (const TierArray* h = array_of(s, a); h && h->tier == Tier::nvme) e += pipe.element_bytes(a);
    per_element = std::max(per_element, e);
    largest = std::max(largest, s.count);
  }
  int64_t tile = largest;  // nothing on NVMe: each shard in one piece
  if (per_element > 0) {
    const int64_t fit = int64_t(arrays.pinned_free() / (kSlots * per_element)) / 2048 * 2048;
    STRATA_CHECK(fit >= 2048, "offload: the pinned pool has " << arrays.pinned_free()
                                                              << " bytes free, too few for three optimizer tiles of 2048 "
                                                                 "elements; raise pinned_bytes");
    tile = std::min(arrays.options().tile_elements, fit);
  }
  Tile slots[kSlots];
  if (!shards.empty()) pipe.allocate_staging(slots, shards.front(), std::min(tile, largest));
  if (per_element > 0)
    for (Tile& s : slots)
      for (int a = 0; a < kArrays; ++a)
        if (const TierArray* h = array_of(shards.front(), a); h && h->tier == Tier::nvme)
          s.buf[a] = arrays.stage(size_t(tile) * pipe.element_bytes(a));

  std::vector<std::pair<const AdamShard*, int64_t>> jobs;  // (shard, first element)
  for (const AdamShard& s : shards)
    for (int64_t b = 0; b < s.count; b += std::max<int64_t>(tile, 1)) jobs.emplace_back(&s, b);
  auto issue = [&](size_t j) {
    Tile& s = slots[j % kSlots];
    pipe.settle(s);  // the writes of job j - kSlots
    s.shard = jobs[j].first;
    s.begin = jobs[j].second;
    s.count = std::min(tile, s.shard->count - s.begin);
    pipe.read(s);
  };
  if (!jobs.empty()) issue(0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    Tile& s = slots[j % kSlots];
    pipe.settle(s);  // this tile's reads
    if (j + 1 < jobs.size()) issue(j + 1);
    pipe.stage(s, /*in=*/true);
    pipe.update(s, adamw, lr, grad_scale, t);
    pipe.stage(s, /*in=*/false);
    pipe.write(s);
  }
  for (Tile& s : slots) pipe.settle(s);
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
