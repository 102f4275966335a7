// The streamed, tiled AdamW shared by the OffloadStore and ZeRO (see the header for
// the invariants): reads of tile i+1, the update of tile i and the writes of tile
// i-1 overlap, and a slot is settled before it is reused.
#include "tile_pipeline.h"

#include <algorithm>
#include <cstring>

#include "../lib/optim/adamw_args.h"
#include "ops.h"

namespace strata::offload {

TilePipeline::TilePipeline(const Model& model, Device& stage, Device& adam, NvmeStore* nvme)
    : model_(model), stage_(stage), adam_(adam), nvme_(nvme), dtype_(precision_dtype(model.precision())) {}

size_t TilePipeline::element_bytes(int a) const { return a == kTileWorking ? dtype_size(dtype_) : 4; }

size_t TilePipeline::nvme_bytes_per_element(const TileSpan& shape) const {
  size_t e = 0;
  for (int a = 0; a < kTileArrays; ++a)
    if (shape.arrays[a].present && shape.arrays[a].tier == Tier::nvme) e += element_bytes(a);
  return e;
}

void TilePipeline::allocate(Tile (&slots)[kTileSlots], const TileSpan& shape, int64_t tile, int64_t staged,
                            const std::function<PinnedBuffer(size_t)>& allocate, const char* what) {
  // On a CUDA device, arrays whose home is not the kind of memory AdamW runs in get
  // staging tiles in every slot.
  const bool cuda = stage_.kind() == DeviceKind::cuda, adam_on_device = adam_.kind() == DeviceKind::cuda;
  for (int a = 0; cuda && a < kTileArrays; ++a) {
    const TileHome& h = shape.arrays[a];
    if (!h.present || (h.tier == Tier::device) == adam_on_device) continue;
    const size_t bytes = size_t(staged) * element_bytes(a);
    for (Tile& s : slots) {
      if (adam_on_device)
        s.device_stage[a] = Buffer(stage_, bytes, what);
      else
        s.host_stage[a].resize(bytes);
    }
  }
  for (Tile& s : slots) {
    for (int a = 0; a < kTileArrays; ++a)
      if (shape.arrays[a].present && shape.arrays[a].tier == Tier::nvme)
        s.buf[a] = allocate(size_t(tile) * element_bytes(a));
    if (cuda) {
      s.updated = std::make_unique<Event>(stage_);
      s.staged_out = std::make_unique<Event>(stage_);
    }
  }
}

void TilePipeline::read(Tile& t) {
  const TileSpan& s = *t.span;
  for (int a = 0; a < kTileArrays; ++a) {
    const TileHome& h = s.arrays[a];
    if (!h.present) continue;
    const size_t at = size_t(t.begin) * element_bytes(a), bytes = size_t(t.count) * element_bytes(a);
    t.home[a] = h.tier == Tier::nvme ? static_cast<char*>(t.buf[a].data()) : h.data + at;
    t.ptr[a] = t.device_stage[a].data()      ? static_cast<char*>(t.device_stage[a].data())
               : !t.host_stage[a].empty() ? t.host_stage[a].data()
                                          : t.home[a];
    if (a == kTileGrad && s.grad_zero) {
      if (adam_.kind() == DeviceKind::cuda)
        ops::fill_zero(TensorView(t.ptr[a], DType::f32, {t.count}, &adam_), adam_.stream());
      else
        std::memset(t.ptr[a], 0, bytes);
    } else if (h.tier == Tier::nvme && a == kTileWorking) {
      std::memset(t.home[a], 0, bytes);  // fully rewritten from master; the padding stays 0
    } else if (h.tier == Tier::nvme) {
      t.io.push_back(nvme_->read(h.object, at, t.home[a], bytes));
      bytes_read_ += bytes;
    }
  }
}

void TilePipeline::write(Tile& t) {
  for (int a : {kTileMaster, kTileM, kTileV, kTileWorking}) {
    const TileHome& h = t.span->arrays[a];
    if (!h.present || h.tier != Tier::nvme) continue;
    settle_staged(t);  // the NVMe write reads the pinned tile the copies out filled
    const size_t bytes = size_t(t.count) * element_bytes(a);
    t.io.push_back(nvme_->write(h.object, size_t(t.begin) * element_bytes(a), t.home[a], bytes));
    bytes_written_ += bytes;
  }
}

// Copies the staged arrays between home and staging on the stream of the copy's
// direction (host_to_device or device_to_host of the model's device), ordered by
// events, never by synchronizing a stream: in, every array read (a zeroed gradient
// stays as it is), and AdamW waits for them; out, those AdamW wrote, after the
// update's event. Only on a CUDA device (elsewhere nothing is staged).
void TilePipeline::stage(Tile& t, bool in) {
  if (!t.staged_out) return;
  const bool adam_on_device = adam_.kind() == DeviceKind::cuda;
  const bool to_device = in == adam_on_device;  // staging is AdamW's kind of memory
  Stream& s = stage_.stream(to_device ? StreamRole::host_to_device : StreamRole::device_to_host);
  if (!in && adam_on_device) t.updated->wait(s);  // the AdamW that wrote the staging
  bool any = false;
  for (int a = 0; a < kTileArrays; ++a) {
    if (!t.span->arrays[a].present || t.ptr[a] == t.home[a]) continue;
    if (a == kTileGrad && (!in || t.span->grad_zero)) continue;
    const size_t bytes = size_t(t.count) * element_bytes(a);
    if (in)
      s.copy(t.ptr[a], t.home[a], bytes);
    else
      s.copy(t.home[a], t.ptr[a], bytes);
    any = true;
  }
  if (!any) return;
  t.staged_out->record(s);
  if (!in) {
    t.out_pending = true;
  } else if (adam_on_device) {
    t.staged_out->wait(adam_.stream());
  } else {
    t.staged_out->synchronize();  // AdamW runs on the host and reads the staged bytes
  }
}

void TilePipeline::settle_staged(Tile& t) {
  if (!t.out_pending) return;
  t.staged_out->synchronize();  // the copies out of the staging into the homes
  t.out_pending = false;
}

void TilePipeline::update(Tile& t, const AdamWOptions& adamw, float lr, float grad_scale, int64_t step) {
  Device& dev = adam_;
  const TileSpan& s = *t.span;
  const int64_t lo = s.lo + t.begin, hi = lo + t.count;  // unit coordinates
  for (const ParamInfo& p : model_.parameters()) {
    if (p.unit != s.unit) continue;
    const int64_t begin = std::max(lo, p.offset), end = std::min(hi, p.offset + p.numel());
    if (begin >= end) continue;
    const int64_t at = begin - lo, n = end - begin;
    auto f32 = [&](int a) { return TensorView(t.ptr[a] + size_t(at) * 4, DType::f32, {n}, &dev); };
    ops::AdamWArgs args = adamw_args(adamw, &p, lr, grad_scale, step);
    args.master = f32(kTileMaster);
    args.grad = f32(kTileGrad);
    args.m = f32(kTileM);
    args.v = f32(kTileV);
    if (s.arrays[kTileWorking].present)
      args.working = TensorView(t.ptr[kTileWorking] + size_t(at) * element_bytes(kTileWorking), dtype_, {n}, &dev);
    ops::adamw_step(args, dev.stream());
  }
  // On a CUDA device the copies out wait for this event; unstaged device homes are
  // read next by the compute stream the update ran on. A CPU stream ran it inline.
  if (t.updated && dev.kind() == DeviceKind::cuda) t.updated->record(dev.stream());
}

void TilePipeline::run(Tile (&slots)[kTileSlots], const std::vector<TileSpan>& spans, int64_t tile,
                       const AdamWOptions& adamw, float lr, float grad_scale, int64_t t,
                       const std::function<void(std::future<void>&)>& wait, const std::function<void(int)>& unit_done) {
  std::vector<std::pair<const TileSpan*, int64_t>> jobs;  // (span, first element)
  for (const TileSpan& s : spans)
    for (int64_t b = 0; b < s.count; b += std::max<int64_t>(tile, 1)) jobs.emplace_back(&s, b);
  auto settle = [&](Tile& s) {
    settle_staged(s);
    for (auto& f : s.io) wait(f);
    s.io.clear();
    if (s.last_of_unit) unit_done(s.span->unit);
    s.last_of_unit = false;
  };
  auto issue = [&](size_t j) {
    Tile& s = slots[j % kTileSlots];
    settle(s);  // the writes of job j - kTileSlots
    s.span = jobs[j].first;
    s.begin = jobs[j].second;
    s.count = std::min(tile, s.span->count - s.begin);
    read(s);
  };
  if (!jobs.empty()) issue(0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    Tile& s = slots[j % kTileSlots];
    settle(s);  // this tile's reads (last_of_unit is clear: issue settled the slot)
    if (j + 1 < jobs.size()) issue(j + 1);
    stage(s, /*in=*/true);
    update(s, adamw, lr, grad_scale, t);
    stage(s, /*in=*/false);
    write(s);
    s.last_of_unit = j + 1 == jobs.size() || jobs[j + 1].first->unit != s.span->unit;
  }
  for (size_t j = jobs.size(); j < jobs.size() + kTileSlots; ++j) settle(slots[j % kTileSlots]);  // in job order
  // The contract: the new values are on their tiers (device homes too) when run returns.
  for (Tile& s : slots)
    if (s.updated && adam_.kind() == DeviceKind::cuda) s.updated->synchronize();
}

}  // namespace strata::offload
