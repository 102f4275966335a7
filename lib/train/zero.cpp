#include "zero.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <future>

#include "lib/core/clock.h"
#include "lib/core/host_convert.h"
#include "offload/util.h"
#include "ops.h"
#include "strata/error.h"

namespace strata {

struct ZeroEngine::Unit {
  int64_t numel = 0;
  int64_t lo = 0, hi = 0;  // this rank's shard (stage 0: the whole unit)
  // This rank's arrays, on their tiers (owned by tiers_): (hi - lo) elements each.
  offload::TierArray* master = nullptr;  // f32; none when the f32 working shard is the master
  offload::TierArray *m = nullptr, *v = nullptr;
  offload::TierArray* grad_shard = nullptr;   // stages 2, 3: f32
  offload::TierArray* param_shard = nullptr;  // stage 3: working dtype
  Buffer gathered;         // stage 3: the full parameters while acquired or prefetched
  Buffer staging;          // stages 2, 3: the full gradient while acquired
  int param_refs = 0, grad_refs = 0;
  dist::Work gather;                      // stage 3: the all-gather into `gathered`
  bool gathering = false;                 // ... started and not yet waited for
  offload::PinnedBuffer gather_source;    // ... its shard read from NVMe, until it lands
  std::shared_future<void> shard_read;    // ... that read (the gather's stream waits for it)
  bool reduce_started = false;            // stages 0, 1: this step's reduction is issued
  bool grad_zero = true;        // gradient shard on NVMe: its stored bytes are stale, read as 0
  bool squares_valid = false;   // sum_squares is the final shard's (written on the last micro)
  double sum_squares = 0;
};

namespace {
// Adds the scope's duration to `total`: the time a rank is blocked on a collective.
struct Blocked {
  double& total;
  double start = now_seconds();
  ~Blocked() { total += now_seconds() - start; }
};

TensorView range(void* base, DType dt, int64_t begin, int64_t count, Device* device) {
  return TensorView(static_cast<char*>(base) + size_t(begin) * dtype_size(dt), dt, {count}, device);
}
}  // namespace

ZeroEngine::ZeroEngine(Model& model, dist::Comm& comm, int stage, const AdamWOptions& options,
                       const offload::OffloadOptions* off)
    : model_(&model), comm_(&comm), stage_(stage), options_(options), gathered_free_(model.device()) {
  using offload::Tier;
  STRATA_CHECK(stage >= 0 && stage <= 3, "Trainer: ZeRO stage " << stage << " does not exist; use 0, 1, 2 or 3");
  // Built Init::deferred, the model holds no parameters: only stage 3, which keeps a
  // shard, can take them straight from the initialiser.
  const bool deferred = !model.params_resident();
  STRATA_CHECK(!deferred || stage == 3,
               "Trainer: the model was built Model::Init::deferred (it holds no parameters), but ZeRO stage "
                   << stage << " keeps the full working parameters on every device; build it resident, or use stage 3");
  const int N = comm.size(), r = comm.rank();
  Device& dev = model.device();
  Stream& s = dev.stream();
  const DType dt = precision_dtype(model.precision());
  const bool fp32 = model.precision() == Precision::fp32;
  int64_t largest = 0;
  int largest_unit = 0;
  for (int u = 0; u < model.num_units(); ++u) {
    STRATA_CHECK(model.unit_numel(u) % N == 0, "Trainer: unit '" << model.unit_name(u) << "' has " << model.unit_numel(u)
                                                                 << " elements, not divisible by " << N
                                                                 << " ranks; use 1, 2, 4 or 8 ranks");
    if (model.unit_numel(u) > largest) largest = model.unit_numel(largest_unit = u);
  }
  offload::OffloadOptions none;  // no offload: every shard on the device
  none.params = none.grads = none.optimizer = Tier::device;
  const offload::OffloadOptions& o = off ? *off : none;
  STRATA_CHECK(o.params == Tier::device || stage == 3,
               "Trainer: ZeRO stage " << stage << " keeps full working parameters on the device; set "
                                      << "OffloadOptions::params to device, or use stage 3 to page the parameter shard");
  STRATA_CHECK(o.grads == Tier::device || stage >= 2,
               "Trainer: ZeRO stage " << stage << " keeps full gradients on the device; set OffloadOptions::grads "
                                      << "to device, or use stage 2 or 3 to page the gradient shard");
  const bool any_nvme = o.params == Tier::nvme || o.grads == Tier::nvme || o.optimizer == Tier::nvme;
  const int64_t largest_shard = stage == 0 ? largest : largest / N;
  tiers_ = std::make_unique<offload::TieredArrays>(dev, o, any_nvme, "rank" + std::to_string(r),
                                                   size_t(largest_shard) * 4, model.unit_name(largest_unit) + " shard");

  units_.resize(size_t(model.num_units()));
  for (int u = 0; u < model.num_units(); ++u) {
    Unit& x = units_[size_t(u)];
    x.numel = model.unit_numel(u);
    const int64_t s_len = stage == 0 ? x.numel : x.numel / N;
    x.lo = stage == 0 ? 0 : r * s_len;
    x.hi = x.lo + s_len;
    const std::string name = model.unit_name(u);
    const size_t f32 = size_t(s_len) * 4;
    if (stage == 3)
      x.param_shard = tiers_->add(o.params, size_t(s_len) * dtype_size(dt), name + ".params", "ZeRO-3 parameter shard");
    if (!fp32) x.master = tiers_->add(o.optimizer, f32, name + ".master", "AdamW master weights (shard)");
    x.m = tiers_->add(o.optimizer, f32, name + ".exp_avg", "AdamW exp_avg (shard)");
    x.v = tiers_->add(o.optimizer, f32, name + ".exp_avg_sq", "AdamW exp_avg_sq (shard)");
    if (stage >= 2) x.grad_shard = tiers_->add(o.grads, f32, name + ".grads", "ZeRO gradient shard");
  }
  tiers_->reserve();

  // Initial state: master (and the stage-3 shard) = the working shard, m = v = 0, no
  // gradient. A deferred model's unit is drawn on the host (Model::init_unit_params,
  // bitwise the resident constructor's) one at a time and its shard moved to the device.
  std::vector<char> drawn;
  Buffer drawn_shard;
  if (deferred) drawn_shard = Buffer(dev, size_t(largest_shard) * dtype_size(dt), "ZeRO-3 initial shard");
  for (int u = 0; u < model.num_units(); ++u) {
    Unit& x = units_[size_t(u)];
    const int64_t n = x.hi - x.lo;
    TensorView working;
    if (deferred) {
      drawn.resize(size_t(x.numel) * dtype_size(dt));
      model.init_unit_params(u, drawn.data());
      s.copy(drawn_shard.data(), drawn.data() + size_t(x.lo) * dtype_size(dt), size_t(n) * dtype_size(dt));
      working = range(drawn_shard.data(), dt, 0, n, &dev);
    } else {
      working = range(model.unit_params(u).data, dt, x.lo, n, &dev);
    }
    if (x.param_shard) init_array(*x.param_shard, [&](void* p) { ops::cast({range(p, dt, 0, n, &dev), working}, s); });
    if (x.master) init_array(*x.master, [&](void* p) { ops::cast({range(p, DType::f32, 0, n, &dev), working}, s); });
    for (offload::TierArray* a : {x.m, x.v})
      init_array(*a, [&](void* p) { ops::fill_zero(range(p, DType::f32, 0, n, &dev), s); });
  }
  s.synchronize();  // drawn and drawn_shard are freed at scope exit
  construction_host_peak_ = tiers_->bytes_on(Tier::host) + drawn.capacity() + tiers_->pinned_high_water();
  zero_grad();
  model.set_store(this);  // stages 0, 1: buffers stay resident; the store starts reductions
  if (stage >= 2) model.release_resident_state(/*params=*/stage == 3, /*grads=*/true);
}

ZeroEngine::~ZeroEngine() {
  // Collectives in flight write buffers owned here: let them land (or fail) first.
  for (Reduction& r : reducing_) try {
      r.work.wait();
    } catch (const std::exception&) {
    }
  for (Unit& x : units_) try {
      x.gather.wait();
      if (x.shard_read.valid()) x.shard_read.wait();  // it writes gather_source
    } catch (const std::exception&) {
    }
  if (model_->store() == this) model_->set_store(nullptr);
}

// fill(p) writes the array's initial bytes at p (device ops): in place, or staged and
// written to NVMe. A CUDA device's ops reach only its memory: host homes are filled
// there and copied.
void ZeroEngine::init_array(offload::TierArray& a, const std::function<void(void*)>& fill) {
  Device& dev = model_->device();
  Stream& s = dev.stream();
  offload::PinnedBuffer stage;
  if (a.tier == offload::Tier::nvme) stage = tiers_->stage(a.bytes);
  void* home = a.tier == offload::Tier::nvme ? stage.data() : a.data;
  Buffer filled;
  if (dev.kind() == DeviceKind::cuda && a.tier != offload::Tier::device) filled = Buffer(dev, a.bytes, "ZeRO initial shard");
  fill(filled.data() ? filled.data() : home);
  if (filled.data()) s.copy(home, filled.data(), a.bytes);
  s.synchronize();
  if (a.tier != offload::Tier::nvme) return;
  std::future<void> done = tiers_->write(a, 0, stage.data(), a.bytes);
  tiers_->wait(done);
}

bool ZeroEngine::grads_on_nvme() const { return stage_ >= 2 && tiers_->options().grads == offload::Tier::nvme; }

double ZeroEngine::take_comm_wait_seconds() {
  const double w = comm_wait_;
  comm_wait_ = 0;
  return w;
}

size_t ZeroEngine::take_pinned_high_water() { return tiers_->take_pinned_high_water(); }

double ZeroEngine::take_stall_seconds() {
  const double now = tiers_->stall_seconds(), d = now - stall_at_;
  stall_at_ = now;
  return d;
}

// A pooled buffer of at least `bytes`. Gradient staging in flight is reclaimed first
// while more than one reduction is pending: one stays in flight behind the compute
// (none while a borrowed unit's staging waits for its own backward: the same bound).
Buffer ZeroEngine::take(std::vector<Buffer>& pool, size_t bytes, const char* what) {
  size_t in_flight = 2;
  for (const Unit& y : units_)
    if (y.staging.data() && y.grad_refs == 0) in_flight = 1;
  for (;;) {
    for (size_t i = 0; i < pool.size(); ++i)
      if (pool[i].size() >= bytes) {
        Buffer b = std::move(pool[i]);
        pool.erase(pool.begin() + long(i));
        return b;
      }
    if (&pool != &grad_pool_ || reducing_.size() < in_flight) return Buffer(model_->device(), bytes, what);
    finish_reduce();
  }
}

// Stage 3: the all-gather of unit u into a pooled buffer, started now; acquire waits.
void ZeroEngine::start_gather(int u) {
  Unit& x = units_[size_t(u)];
  const DType dt = precision_dtype(model_->precision());
  Device& dev = model_->device();
  x.gathered = take(param_pool_, size_t(x.numel) * dtype_size(dt), "ZeRO-3 gathered parameters");
  void* shard = x.param_shard->data;
  // The stream the gather (and the copy before it) is ordered on.
  Stream* order = &dev.stream();
  if (x.param_shard->tier == offload::Tier::nvme) {
    // Staged until the gather completes. The host does not wait for the read: the
    // host-to-device stream does, and the gather follows it there, so the read of a
    // prefetched unit runs while the current one computes. The pooled buffer may still
    // be read by compute (a unit released a moment ago): that stream waits for it first.
    x.gather_source = tiers_->stage(x.param_shard->bytes);
    x.shard_read = tiers_->read(*x.param_shard, 0, x.gather_source.data(), x.param_shard->bytes).share();
    order = &dev.stream(StreamRole::host_to_device);
    gathered_free_.record(dev.stream());
    gathered_free_.wait(*order);
    order->host_function([read = x.shard_read] { read.wait(); });  // finish_gather reports its error
    shard = x.gather_source.data();
  }
  TensorView in = range(shard, dt, 0, x.hi - x.lo, &dev);
  if (dev.kind() == DeviceKind::cuda && x.param_shard->tier != offload::Tier::device) {
    // Collectives take device memory: the shard goes to its place in the gathered
    // buffer and is gathered in place.
    in = range(x.gathered.data(), dt, x.lo, x.hi - x.lo, &dev);
    order->copy(in.data, shard, x.param_shard->bytes);
  }
  x.gather = comm_->all_gather_async(in, range(x.gathered.data(), dt, 0, x.numel, &dev), *order);
  x.gathering = true;
}

void ZeroEngine::finish_gather(Unit& x) {
  {
    Blocked b{comm_wait_};
    if (x.gather_source)
      x.gather.wait();  // the host frees the pinned shard the gather (or its copy) reads
    else
      x.gather.wait(model_->device().stream());  // compute uses the gathered unit next
  }
  x.gathering = false;
  if (x.shard_read.valid()) {  // done: the gather came after it; rethrows its error
    std::shared_future<void> read = std::move(x.shard_read);
    x.gather_source.reset();
    read.get();
  }
  x.gather_source.reset();
}

// Stage 3 read-ahead: the unit after u in the pass's direction (the first unit acquired
// while no other is held is the one about to run; the others are borrowed). Every rank
// sees the same acquires, so every rank issues the same gathers in the same order.
void ZeroEngine::prefetch_after(int u) {
  const int N = model_->num_units(), last = last_primary_;
  last_primary_ = u;
  int next = -1;
  if (u == N - 1 || u == last - 1)
    next = u - 1;
  else if (u == last + 1 || (u == 0 && last != 1))
    next = u + 1;
  if (next < 0 || next >= N) return;
  Unit& y = units_[size_t(next)];
  if (y.param_refs > 0 || y.gathering) return;
  start_gather(next);
}

// Prefetched gathers read the parameter shards: they land (and are dropped) before
// the update writes them.
void ZeroEngine::drop_prefetched() {
  for (Unit& x : units_)
    if (x.gathering && x.param_refs == 0) {
      finish_gather(x);
      param_pool_.push_back(std::move(x.gathered));
    }
}

void* ZeroEngine::acquire_params(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ < 3) return model_->unit_params(u).data;
  if (x.param_refs++ == 0) {
    bool primary = true;
    for (const Unit& y : units_) primary = primary && (&y == &x || y.param_refs == 0);
    if (!x.gathering) start_gather(u);
    if (primary) prefetch_after(u);  // starts before this unit's wait, runs during its compute
    finish_gather(x);
  }
  return x.gathered.data();
}

void ZeroEngine::release_params(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ < 3) return;
  if (--x.param_refs == 0) param_pool_.push_back(std::move(x.gathered));
}

void* ZeroEngine::acquire_grads(int u) {
  Unit& x = units_[size_t(u)];
  // Backward runs units in reverse: a unit acquired while no other is held starts its
  // own backward.
  bool primary = true;
  for (const Unit& y : units_) primary = primary && y.grad_refs == 0;
  if (primary) primary_ = u;
  if (stage_ < 2) {
    STRATA_CHECK(!x.reduce_started, "ZeRO: unit '" << model_->unit_name(u)
                                                   << "' is used after its gradient reduction started; a unit may "
                                                      "borrow parameters only from units before it");
    // Then every later unit's gradient of the last micro-batch is final.
    if (primary && final_micro_)
      for (int v = model_->num_units() - 1; v > u; --v) start_reduce(v);
    ++x.grad_refs;
    return model_->unit_grads(u).data;
  }
  if (x.grad_refs++ == 0 && !x.staging.data()) {  // a borrowed unit keeps its staging (release_grads)
    x.staging = take(grad_pool_, size_t(x.numel) * 4, "ZeRO gradient staging");
    ops::fill_zero(range(x.staging.data(), DType::f32, 0, x.numel, &model_->device()), model_->device().stream());
  }
  return x.staging.data();
}

void ZeroEngine::release_grads(int u) {
  Unit& x = units_[size_t(u)];
  if (--x.grad_refs > 0 || stage_ < 2) return;
  // A unit whose parameters a later unit borrowed (the tied embedding; units borrow only
  // from units before them) gets the rest of this micro-batch's gradient from its own
  // backward: its staging waits for it, so the reduction sums whole micro-batch
  // gradients, like stages 0, 1 and one device.
  if (primary_ > u) return;
  // This unit's gradient of this micro-batch is final: reduce-scatter it while the
  // units before it compute; finish_reduce adds it to the shard.
  Device& dev = model_->device();
  TensorView full = range(x.staging.data(), DType::f32, 0, x.numel, &dev);
  TensorView mine = range(x.staging.data(), DType::f32, x.lo, x.hi - x.lo, &dev);
  Reduction r{u, comm_->reduce_scatter_sum_async(full, mine, dev.stream()), std::move(x.staging), final_micro_, {}, {}};
  // The shard's sum so far, read from NVMe while the reduction runs: when it holds one
  // (not the step's first micro-batch), no earlier reduction of this unit is still to
  // add to it, and the pinned pool has room beside it for the staging others need.
  offload::TierArray& g = *x.grad_shard;
  const bool earlier = std::any_of(reducing_.begin(), reducing_.end(), [u](const Reduction& e) { return e.unit == u; });
  if (g.tier == offload::Tier::nvme && !x.grad_zero && !earlier && tiers_->pinned_free() >= 2 * g.bytes) {
    tiers_->settle(g);
    r.acc = tiers_->stage(g.bytes);
    r.acc_read = tiers_->read(g, 0, r.acc.data(), g.bytes);
  }
  reducing_.push_back(std::move(r));
  while (!reducing_.empty() && reducing_.front().work.test()) finish_reduce();  // never blocks
}

// Stages 0, 1: unit u's gradient (all of this step's micro-batches) is reduced in place.
void ZeroEngine::start_reduce(int u) {
  Unit& x = units_[size_t(u)];
  if (x.reduce_started) return;
  x.reduce_started = true;
  Stream& s = model_->device().stream();
  dist::Work w = stage_ == 0 ? comm_->all_reduce_sum_async(model_->unit_grads(u), s)
                             : comm_->reduce_scatter_sum_async(model_->unit_grads(u), shard_grads(u), s);
  reducing_.push_back(Reduction{u, std::move(w), Buffer(), true});
}

// Waits for the oldest reduction; at stages 2, 3 adds its shard to the accumulator.
void ZeroEngine::finish_reduce() {
  Reduction r = std::move(reducing_.front());
  reducing_.pop_front();
  {
    // Everything that reads the result runs on the compute stream (the host copies
    // below wait on it): on NCCL the stream waits for the collective's event.
    Blocked b{comm_wait_};
    r.work.wait(model_->device().stream());
  }
  if (stage_ < 2) return;
  Unit& x = units_[size_t(r.unit)];
  offload::TierArray& g = *x.grad_shard;
  Device& dev = tiers_->device_for(g.tier);  // where the accumulation runs
  const int64_t n = x.hi - x.lo;
  TensorView mine = range(r.staging.data(), DType::f32, x.lo, n, &model_->device());
  std::vector<float> mine_host;  // a CUDA device's reduced slice, for a host or NVMe shard
  if (&dev != &model_->device()) {
    mine_host.resize(size_t(n));
    Stream& s = model_->device().stream();
    s.copy(mine_host.data(), mine.data, g.bytes);
    offload::host_waits(s);  // the host accumulates the slice
    mine = TensorView(mine_host.data(), DType::f32, {n}, &dev);
  }
  if (g.tier != offload::Tier::nvme) {
    ops::accumulate({range(g.data, DType::f32, 0, n, &dev), mine}, dev.stream());
  } else {  // read-modify-write through pinned memory; the write lands behind the next units' backward
    offload::PinnedBuffer acc;
    if (r.acc_read.valid()) {  // read ahead, with the reduction
      tiers_->wait(r.acc_read);
      acc = std::move(r.acc);
    } else {
      tiers_->settle(g);
      acc = tiers_->stage(g.bytes);
      if (x.grad_zero) {
        ops::fill_zero(range(acc.data(), DType::f32, 0, n, &dev), dev.stream());
      } else {
        std::future<void> done = tiers_->read(g, 0, acc.data(), g.bytes);
        tiers_->wait(done);
      }
    }
    TensorView a = range(acc.data(), DType::f32, 0, n, &dev);
    ops::accumulate({a, mine}, dev.stream());
    offload::host_waits(dev.stream());  // the host sums the squares and hands the bytes to NVMe
    x.squares_valid = r.final_micro;
    if (r.final_micro) x.sum_squares = offload::sum_squares_f32(static_cast<const float*>(acc.data()), n);
    tiers_->write_behind(g, std::move(acc), g.bytes);
  }
  x.grad_zero = false;
  grad_pool_.push_back(std::move(r.staging));
}

TensorView ZeroEngine::shard_grads(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ >= 2) return range(x.grad_shard->data, DType::f32, 0, x.hi - x.lo, &tiers_->device_for(x.grad_shard->tier));
  return range(model_->unit_grads(u).data, DType::f32, x.lo, x.hi - x.lo, &model_->device());
}

TensorView ZeroEngine::shard_params(int u) {
  Unit& x = units_[size_t(u)];
  const DType dt = precision_dtype(model_->precision());
  if (stage_ == 3) return range(x.param_shard->data, dt, 0, x.hi - x.lo, &tiers_->device_for(x.param_shard->tier));
  return range(model_->unit_params(u).data, dt, x.lo, x.hi - x.lo, &model_->device());
}

void ZeroEngine::reduce_gradients() {
  if (stage_ < 2)  // the units whose reduction did not start during backward
    for (int u = 0; u < model_->num_units(); ++u) start_reduce(u);
  while (!reducing_.empty()) finish_reduce();
  for (Unit& x : units_) x.reduce_started = false;
}

float ZeroEngine::grad_norm() {
  Device& dev = model_->device();
  float norm = 0;
  if (grads_on_nvme()) {  // what ops::global_norm sums, from the squares taken at write-out
    double total = 0;
    std::vector<float> back;
    for (Unit& x : units_) {
      if (x.grad_zero) continue;
      if (!x.squares_valid) {  // the step ended early: read the shard back once
        tiers_->settle(*x.grad_shard);
        offload::PinnedBuffer b = tiers_->stage(x.grad_shard->bytes);
        std::future<void> done = tiers_->read(*x.grad_shard, 0, b.data(), x.grad_shard->bytes);
        tiers_->wait(done);
        x.sum_squares = offload::sum_squares_f32(static_cast<const float*>(b.data()), x.hi - x.lo);
        x.squares_valid = true;
      }
      total += x.sum_squares;
    }
    norm = float(std::sqrt(total));
  } else {
    // The shards' device: a host tier's is a host CPU device. Ops write device memory:
    // the norm is read back by copy.
    Device& nd = stage_ >= 2 ? tiers_->device_for(tiers_->options().grads) : dev;
    Buffer out(nd, 4, "ZeRO gradient norm");
    ops::GlobalNormArgs g;
    g.out = TensorView(out.data(), DType::f32, {1}, &nd);
    for (int u = 0; u < model_->num_units(); ++u) g.inputs.push_back(shard_grads(u));
    ops::global_norm(g, nd.stream());
    nd.stream().copy(&norm, out.data(), 4);
    offload::host_waits(nd.stream());  // the host reads the norm
  }
  if (stage_ == 0) return norm;  // every rank holds the whole reduced gradient
  float squared = norm * norm;
  {
    Blocked b{comm_wait_};
    Buffer sum(dev, 4, "ZeRO gradient norm all-reduce");  // collectives take device memory
    dev.stream().copy(sum.data(), &squared, 4);
    comm_->all_reduce_sum(TensorView(sum.data(), DType::f32, {1}, &dev), dev.stream());
    dev.stream().copy(&squared, sum.data(), 4);
    offload::host_waits(dev.stream());  // the host reads the reduced square
  }
  return std::sqrt(squared);
}

void ZeroEngine::update(float lr, float grad_scale, int64_t t) {
  Stream& s = model_->device().stream();
  const size_t ds = dtype_size(precision_dtype(model_->precision()));
  const bool fp32 = model_->precision() == Precision::fp32;
  std::vector<offload::TierArray> borrowed;  // the model's resident shards (stages < 3, < 2)
  borrowed.reserve(2 * units_.size());       // no reallocation: the shards point into it
  std::vector<offload::AdamShard> shards;
  drop_prefetched();
  for (int u = 0; u < model_->num_units(); ++u) {
    Unit& x = units_[size_t(u)];
    const int64_t n = x.hi - x.lo;
    offload::AdamShard a;
    a.unit = u;
    a.lo = x.lo;
    a.count = n;
    offload::TierArray* working = x.param_shard;
    if (!working) working = &borrowed.emplace_back(offload::TierArray::borrow(shard_params(u).data, size_t(n) * ds));
    a.master = fp32 ? working : x.master;  // fp32: the working shard is the master
    a.working = fp32 ? nullptr : working;
    a.grad = x.grad_shard ? x.grad_shard : &borrowed.emplace_back(offload::TierArray::borrow(shard_grads(u).data, size_t(n) * 4));
    a.m = x.m;
    a.v = x.v;
    a.grad_zero = grads_on_nvme() && x.grad_zero;
    shards.push_back(a);
  }
  offload::tiled_adamw(*tiers_, *model_, options_, shards, lr, grad_scale, t);
  if (stage_ == 1 || stage_ == 2) {
    Blocked b{comm_wait_};
    for (int u = 0; u < model_->num_units(); ++u) comm_->all_gather(shard_params(u), model_->unit_params(u), s);
  }
}

void ZeroEngine::zero_grad() {
  if (stage_ < 2) {
    model_->zero_grad();
    return;
  }
  for (Unit& x : units_) {
    x.grad_zero = true;
    x.squares_valid = false;
    if (x.grad_shard->tier != offload::Tier::nvme) {
      Device& dev = tiers_->device_for(x.grad_shard->tier);
      ops::fill_zero(range(x.grad_shard->data, DType::f32, 0, x.hi - x.lo, &dev), dev.stream());
    }
  }
}

// ---- checkpoints

// Checkpoint transfers: dst / src are host memory; device and host tiers go through
// Stream::copy (device memory may not be host-addressable).
void ZeroEngine::read_shard(const offload::TierArray& a, void* dst) {
  if (a.tier != offload::Tier::nvme) {
    Stream& s = model_->device().stream();
    s.copy(dst, a.data, a.bytes);
    s.synchronize();
    return;
  }
  tiers_->settle(a);
  offload::PinnedBuffer b = tiers_->stage(a.bytes);
  std::future<void> done = tiers_->read(a, 0, b.data(), a.bytes);
  tiers_->wait(done);
  std::memcpy(dst, b.data(), a.bytes);
}

void ZeroEngine::write_shard(offload::TierArray& a, const void* src) {
  if (a.tier != offload::Tier::nvme) {
    Stream& s = model_->device().stream();
    s.copy(a.data, src, a.bytes);
    s.synchronize();
    return;
  }
  tiers_->settle(a);
  offload::PinnedBuffer b = tiers_->stage(a.bytes);
  std::memcpy(b.data(), src, a.bytes);
  std::future<void> done = tiers_->write(a, 0, b.data(), a.bytes);
  tiers_->wait(done);
}

// full (numel) = every rank's f32 shard, rank-major.
void ZeroEngine::gather_f32(int u, const offload::TierArray& shard, std::vector<float>& full) {
  Unit& x = units_[size_t(u)];
  Device& dev = model_->device();
  full.assign(size_t(x.numel), 0.0f);
  if (stage_ == 0) {  // every rank holds the whole unit
    read_shard(shard, full.data());
    return;
  }
  const int64_t n = x.hi - x.lo;
  std::vector<float> mine(static_cast<size_t>(n));
  read_shard(shard, mine.data());
  Buffer in(dev, size_t(n) * 4, "ZeRO checkpoint shard"), out(dev, size_t(x.numel) * 4, "ZeRO checkpoint unit");
  Stream& s = dev.stream();  // collectives take device memory
  s.copy(in.data(), mine.data(), in.size());
  comm_->all_gather(range(in.data(), DType::f32, 0, n, &dev), range(out.data(), DType::f32, 0, x.numel, &dev), s);
  s.copy(full.data(), out.data(), out.size());
  s.synchronize();
}

void ZeroEngine::gather_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                              std::vector<float>& exp_avg_sq) {
  Unit& x = units_[size_t(u)];
  drop_prefetched();
  if (x.master) {
    gather_f32(u, *x.master, master);
  } else {  // fp32: the working shard is the master
    offload::TierArray working = x.param_shard ? offload::TierArray() : offload::TierArray::borrow(shard_params(u).data, size_t(x.hi - x.lo) * 4);
    gather_f32(u, x.param_shard ? *x.param_shard : working, master);
  }
  gather_f32(u, *x.m, exp_avg);
  gather_f32(u, *x.v, exp_avg_sq);
}

void ZeroEngine::load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) {
  Unit& x = units_[size_t(u)];
  drop_prefetched();
  if (x.master)
    write_shard(*x.master, master + x.lo);
  else
    load_params(u, master);  // fp32: the master is the working parameters
  write_shard(*x.m, exp_avg + x.lo);
  write_shard(*x.v, exp_avg_sq + x.lo);
}

void ZeroEngine::load_params(int u, const float* values) {
  Unit& x = units_[size_t(u)];
  const DType dt = precision_dtype(model_->precision());
  drop_prefetched();
  if (stage_ < 3) {  // the full working parameters are resident
    copy_from_host_f32(model_->unit_params(u), values);
    return;
  }
  const int64_t n = x.hi - x.lo;  // converted on the host, as copy_from_host_f32 does
  std::vector<char> shard(size_t(n) * dtype_size(dt));
  io::from_f32(values + x.lo, shard.data(), io::float_format(dt), size_t(n));
  write_shard(*x.param_shard, shard.data());
}

ZeroMemory ZeroEngine::memory() const {
  ZeroMemory mem;
  const size_t ds = dtype_size(precision_dtype(model_->precision()));
  for (const Unit& x : units_) {
    mem.params += stage_ < 3 ? size_t(x.numel) * ds : x.param_shard->bytes + x.gathered.size();
    mem.grads += stage_ < 2 ? size_t(x.numel) * 4 : x.grad_shard->bytes + x.staging.size();
    for (const offload::TierArray* a : {x.master, x.m, x.v}) mem.optimizer += a ? a->bytes : 0;
  }
  for (const Buffer& b : param_pool_) mem.params += b.size();
  for (const Buffer& b : grad_pool_) mem.grads += b.size();
  mem.host_bytes = tiers_->bytes_on(offload::Tier::host);
  mem.nvme_bytes = tiers_->bytes_on(offload::Tier::nvme);
  mem.pinned_bytes = tiers_->pinned_high_water();
  mem.host_construction_peak = construction_host_peak_;
  return mem;
}

}  // namespace strata
