// Model: lays out each unit's parameters in one flat buffer, initialises them from
// the counter-based RNG, and drives forward and backward unit by unit.
// Invariants: a unit's flat buffer is 4 KiB aligned and padded to a multiple of
// 4 KiB; gradients are f32 with the same element layout; nothing in forward or
// backward allocates once ensure_activations() has sized the buffers for (B, T).
#include <algorithm>
#include <cmath>
#include <cstring>

#include <sys/mman.h>

#include "strata/error.h"
#include "store.h"
#include "unit.h"
#include "wiring.h"

namespace strata {

namespace {
constexpr int64_t kTensorAlign = 16;  // elements: each tensor starts 64-byte aligned in f32

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Zeroes a new buffer. On a CPU device the whole pages of a large one are handed
// back to the kernel instead (private anonymous memory reads as zero afterwards and
// costs nothing until touched), so a model whose gradients an offload store will own
// never makes them resident: a model larger than RAM can still be built. Other
// devices zero it with fill_zero on their stream.
void zero_new_buffer(Device& device, Buffer& buffer) {
  void* data = buffer.data();
  const size_t bytes = buffer.size();
  if (device.kind() != DeviceKind::cpu) {
    ops::fill_zero(TensorView(data, DType::f32, {int64_t(bytes / 4)}, &device), device.stream());
    return;
  }
  if (bytes >= size_t(1) << 20) {
    const uintptr_t page = 4096, lo = uintptr_t(data), hi = lo + bytes;
    const uintptr_t a = (lo + page - 1) / page * page, b = hi / page * page;
    if (::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED) == 0) {
      std::memset(data, 0, a - lo);
      std::memset(reinterpret_cast<void*>(b), 0, hi - b);
      return;
    }
  }
  std::memset(data, 0, bytes);
}
}  // namespace

int64_t ParamInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The views a unit works on: its own tensors in spec order (-1 for absent ones),
// then the tensors it borrows; each slot names an index into params_.
struct Model::Views {
  std::vector<std::vector<int>> slots;
};

// Residual stream, its gradient (ping-pong) and the shared backward scratch.
struct Model::Activations {
  int64_t capacity_rows = 0;
  std::vector<Buffer> residual;  // n_units - 1 buffers: the input of unit u+1 is residual[u]
  Buffer grad_a, grad_b;
  Buffer losses;  // (rows) f32
  Buffer scratch;
  Buffer transient;        // activations units recompute (shared, see Unit)
  Buffer tokens, targets;  // (rows) i32 copies owned by the device
  std::vector<Buffer> extra_tokens;  // (rows) i32, one per named batch input (Wiring::extra_names)
  std::vector<Buffer> side_grads;    // (rows, C): gradient of each published activation (Wiring slots)
};

const char* param_role_name(ParamRole role) {
  switch (role) {
    case ParamRole::matrix: return "matrix";
    case ParamRole::embedding: return "embedding";
    case ParamRole::norm: return "norm";
    case ParamRole::bias: return "bias";
  }
  return "?";
}

std::vector<std::unique_ptr<Unit>> make_transformer_units(const ModelConfig& config) {
  config.validate();
  std::vector<std::unique_ptr<Unit>> units;
  units.push_back(make_embedding_unit(config));
  for (int l = 0; l < int(config.n_layers); ++l) units.push_back(make_block_unit(config, l));
  units.push_back(make_head_unit(config));
  return units;
}

namespace {
// A user's unit list, checked before the Model lays anything out.
std::vector<std::unique_ptr<Unit>> checked_units(const ModelConfig& config, std::vector<std::unique_ptr<Unit>> units) {
  config.validate();
  STRATA_CHECK(units.size() >= 2, "Model: " << units.size() << " units; a model needs a first unit (tokens -> stream) "
                                            "and a last unit (stream -> losses), with the trunk between them");
  STRATA_CHECK(int64_t(units.size()) == config.n_layers + 2,
               "Model: " << units.size() << " units, but config.n_layers = " << config.n_layers << " asks for "
                         << config.n_layers + 2 << " (first, n_layers trunk units, last); set n_layers to "
                         << units.size() - 2);
  for (size_t u = 0; u < units.size(); ++u) {
    STRATA_CHECK(units[u], "Model: unit " << u << " is null");
    for (size_t v = 0; v < u; ++v)
      STRATA_CHECK(units[v]->name() != units[u]->name(), "Model: units " << v << " and " << u << " are both named '"
                                                                         << units[u]->name()
                                                                         << "'; unit names must be unique");
  }
  return units;
}
}  // namespace

Model::Model(const ModelConfig& config, Device& device, Precision precision, uint64_t seed, Init init)
    : Model(config, make_transformer_units(config), device, precision, seed, init) {}

Model::Model(const ModelConfig& config, std::vector<std::unique_ptr<Unit>> units, Device& device,
             Precision precision, uint64_t seed, Init init)
    : config_(config),
      device_(&device),
      precision_(precision),
      seed_(seed),
      units_(checked_units(config, std::move(units))),
      wiring_(std::make_unique<Wiring>(Wiring::of(units_))) {
  const DType dt = precision_dtype(precision_);
  for (int u = 0; u < int(units_.size()); ++u) {
    int64_t offset = 0;
    for (const ParamSpec& s : units_[u]->param_specs()) {
      if (s.shape.empty()) continue;
      ParamInfo info{units_[u]->name() + "." + s.name, u, offset, s.shape, s.role};
      offset = round_up(offset + info.numel(), kTensorAlign);
      params_.push_back(std::move(info));
    }
    // Pad to 4 KiB in both the working dtype and f32, so O_DIRECT and sharding work.
    int64_t numel = round_up(std::max<int64_t>(offset, 1), 4096 / 2);
    unit_numel_.push_back(numel);
    if (init == Init::deferred) continue;
    param_buffers_.emplace_back(device, size_t(numel) * dtype_size(dt), "parameters");
    grad_buffers_.emplace_back(device, size_t(numel) * 4, "gradients");
    zero_new_buffer(device, grad_buffers_.back());
  }
  params_resident_ = grads_resident_ = init == Init::resident;

  // One unit staged in host memory at a time (a device's buffers may not be).
  std::vector<char> staging;
  for (int u = 0; u < int(param_buffers_.size()); ++u) {
    staging.resize(size_t(unit_numel_[size_t(u)]) * dtype_size(dt));
    init_unit_params(u, staging.data());
    device.stream().copy(param_buffers_[size_t(u)].data(), staging.data(), staging.size());
    device.stream().synchronize();
  }
  views_ = std::make_unique<Views>();
  auto index_of = [&](const std::string& name) {
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i].name == name) return int(i);
    STRATA_FAIL("Model: unit borrows unknown parameter '" << name << "'");
  };
  for (auto& unit : units_) {
    std::vector<int> slots;
    for (const ParamSpec& s : unit->param_specs()) slots.push_back(s.shape.empty() ? -1 : index_of(unit->name() + "." + s.name));
    for (const std::string& name : unit->borrowed()) slots.push_back(index_of(name));
    views_->slots.push_back(std::move(slots));
  }
  device.stream().synchronize();
}

Model::~Model() = default;

// GPT-2 initialisation: element i of parameter tensor k of unit u is normal(0, std)
// from Philox keyed by (seed, u, k), so it does not depend on the device, the thread
// count, the precision (only its rounding does) or the tier it is written to. Drawn
// in fixed chunks, so the host memory is dst's and a chunk's, whatever the tensor.
void Model::init_unit_params(int u, void* dst) const {
  STRATA_CHECK(u >= 0 && u < num_units(), "Model::init_unit_params: unit " << u << " of " << num_units());
  const DType dt = precision_dtype(precision_);
  char* base = static_cast<char*>(dst);
  std::memset(base, 0, size_t(unit_numel_[size_t(u)]) * dtype_size(dt));
  size_t next = 0;  // params_ holds unit u's tensors consecutively, in spec order
  while (next < params_.size() && params_[next].unit != u) ++next;
  constexpr int64_t kChunk = 1 << 16;
  std::vector<float> chunk(static_cast<size_t>(kChunk));
  uint32_t k = 0;
  for (const ParamSpec& s : units_[size_t(u)]->param_specs()) {
    ++k;
    if (s.shape.empty()) continue;
    const ParamInfo& info = params_[next++];
    const num::RandomKey key{seed_, uint32_t(u), k};
    for (int64_t i0 = 0; i0 < info.numel(); i0 += kChunk) {
      const int64_t n = std::min(kChunk, info.numel() - i0);
      for (int64_t i = 0; i < n; ++i)
        chunk[size_t(i)] = s.init == ParamSpec::Init::normal ? s.std * num::philox_normal(key, uint64_t(i0 + i))
                           : s.init == ParamSpec::Init::ones ? 1.0f
                                                             : 0.0f;
      copy_from_host_f32(TensorView(base + size_t(info.offset + i0) * dtype_size(dt), dt, {n}, nullptr), chunk.data());
    }
  }
}

std::string Model::unit_name(int u) const { return unit(u).name(); }

Unit& Model::unit(int u) const {
  STRATA_CHECK(u >= 0 && u < num_units(), "Model::unit: unit " << u << " of " << num_units());
  return *units_[size_t(u)];
}

int64_t Model::unit_numel(int u) const { return unit_numel_.at(size_t(u)); }

TensorView Model::unit_params(int u) const {
  STRATA_CHECK(params_resident_, "Model::unit_params: the parameters live in the model's store (ZeRO-3 or offload), or nowhere yet (built Init::deferred)");
  return TensorView(param_buffers_.at(size_t(u)).data(), precision_dtype(precision_), {unit_numel_[size_t(u)]}, device_);
}

TensorView Model::unit_grads(int u) const {
  STRATA_CHECK(grads_resident_, "Model::unit_grads: the gradients live in the model's store (ZeRO or offload), or nowhere yet (built Init::deferred)");
  return TensorView(grad_buffers_.at(size_t(u)).data(), DType::f32, {unit_numel_[size_t(u)]}, device_);
}

namespace {
TensorView shaped(void* base, DType dt, const ParamInfo& info, Device* device) {
  TensorView t;
  t.data = static_cast<char*>(base) + size_t(info.offset) * dtype_size(dt);
  t.dtype = dt;
  t.ndim = int(info.shape.size());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = info.shape[size_t(i)];
  t.device = device;
  return t;
}
}  // namespace

TensorView Model::parameter(const std::string& name) const {
  STRATA_CHECK(params_resident_, "Model::parameter: the parameters live in the model's store (ZeRO-3 or offload), or nowhere yet (built Init::deferred)");
  for (const ParamInfo& p : params_)
    if (p.name == name) return shaped(param_buffers_[size_t(p.unit)].data(), precision_dtype(precision_), p, device_);
  STRATA_FAIL("Model::parameter: no parameter named '" << name << "'; see Model::parameters() for the names");
}

TensorView Model::parameter_grad(const std::string& name) const {
  STRATA_CHECK(grads_resident_, "Model::parameter_grad: the gradients live in the model's store (ZeRO or offload), or nowhere yet (built Init::deferred)");
  for (const ParamInfo& p : params_)
    if (p.name == name) return shaped(grad_buffers_[size_t(p.unit)].data(), DType::f32, p, device_);
  STRATA_FAIL("Model::parameter_grad: no parameter named '" << name << "'");
}

std::vector<int> Model::units_used_by(int u) const {
  std::vector<int> used{u};
  for (int slot : views_->slots[size_t(u)])
    if (slot >= 0 && params_[size_t(slot)].unit != u) {
      bool seen = false;
      for (int v : used) seen = seen || v == params_[size_t(slot)].unit;
      if (!seen) used.push_back(params_[size_t(slot)].unit);
    }
  return used;
}

UnitParams Model::acquire(int u, bool grads) {
  const DType dt = precision_dtype(precision_);
  std::vector<int> used = units_used_by(u);
  std::vector<void*> pbase(units_.size(), nullptr), gbase(units_.size(), nullptr);
  STRATA_CHECK(store_ || params_resident_, "Model: unit " << u << "'s parameters are in no store: a model built with "
                                           "Init::deferred trains only once an offload store has initialised it");
  for (int v : used) {
    pbase[size_t(v)] = store_ ? store_->acquire_params(v) : param_buffers_[size_t(v)].data();
    if (grads && !frozen_) gbase[size_t(v)] = store_ ? store_->acquire_grads(v) : grad_buffers_[size_t(v)].data();
  }
  UnitParams p;
  for (int slot : views_->slots[size_t(u)]) {
    if (slot < 0) {
      p.params.emplace_back();
      p.grads.emplace_back();
      continue;
    }
    const ParamInfo& info = params_[size_t(slot)];
    p.params.push_back(shaped(pbase[size_t(info.unit)], dt, info, device_));
    if (grads && frozen_) {  // norm_backward requires d_weight (a discarded sink); every other grad is optional
      p.grads.push_back(info.role == ParamRole::norm
                            ? shaped(grad_sink_.data(), DType::f32, ParamInfo{"", 0, 0, info.shape, info.role}, device_)
                            : TensorView{});
    } else
      p.grads.push_back(grads ? shaped(gbase[size_t(info.unit)], DType::f32, info, device_) : TensorView{});
  }
  return p;
}

void Model::release(int u, bool grads) {
  if (!store_) return;
  grads = grads && !frozen_;
  for (int v : units_used_by(u)) {
    store_->release_params(v);
    if (grads) store_->release_grads(v);
  }
}

void Model::release_resident_state(bool params, bool grads) {
  STRATA_CHECK(store_, "Model::release_resident_state: set a store first; it owns the state afterwards");
  if (params) {
    param_buffers_.clear();
    params_resident_ = false;
  }
  if (grads) {
    grad_buffers_.clear();
    grads_resident_ = false;
  }
}

int64_t Model::num_parameters() const {
  int64_t n = 0;
  for (const ParamInfo& p : params_) n += p.numel();
  return n;
}

void Model::attach_lora(Lora* lora, LinearAdapter* adapter) {
  lora_ = lora;
  adapter_ = adapter;
  for (auto& u : units_) u->set_adapter(adapter);
  have_saved_ = false;
}

void Model::freeze_base() {
  if (frozen_) return;
  int64_t widest = 1;
  for (const ParamInfo& p : params_)
    if (p.role == ParamRole::norm) widest = std::max(widest, p.numel());
  grad_sink_ = Buffer(*device_, size_t(widest) * 4, "frozen norm gradient sink");
  zero_new_buffer(*device_, grad_sink_);
  grad_buffers_.clear();
  grads_resident_ = false;
  frozen_ = true;
}

void Model::set_recompute(const RecomputePolicy& policy) {
  STRATA_CHECK(policy.blocks.empty() || int64_t(policy.blocks.size()) == config_.n_layers,
               "Model::set_recompute: the policy names " << policy.blocks.size() << " blocks, the model has "
                                                         << config_.n_layers);
  recompute_ = policy;
  for (int64_t l = 0; l < config_.n_layers; ++l)
    units_[size_t(l + 1)]->set_recompute(policy.blocks.empty() ? Recompute::none : policy.blocks[size_t(l)]);
  have_saved_ = false;  // saved activations are laid out anew
}

void Model::zero_grad() {
  if (!grads_resident_) return;  // the store zeroes what it hands out
  for (int u = 0; u < num_units(); ++u) ops::fill_zero(unit_grads(u), device_->stream());
}

namespace {
const TensorView* extra_input(const Batch& batch, const std::string& name) {
  for (const NamedInput& e : batch.extra)
    if (e.name == name) return &e.tokens;
  return nullptr;
}
}  // namespace

void Model::check_tokens(const char* what, const TensorView& t) const {
  const int64_t T = t.shape[1];
  const int32_t* tok = t.ptr<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i)
    STRATA_CHECK(tok[i] >= 0 && tok[i] < config_.vocab_size,
                 "Model: token id " << tok[i] << " of " << what << " at row " << i / T << ", position " << i % T
                                    << " is outside the vocabulary [0, " << config_.vocab_size
                                    << "); check the tokenizer and the model's vocab_size");
}

void Model::check_batch(const Batch& batch) const {
  const TensorView& in = batch.inputs;
  STRATA_CHECK(in.data && in.dtype == DType::i32 && in.ndim == 2,
               "Model: inputs must be (B, T) i32 tokens, got " << (in.ndim ? in.str() : std::string("undefined")));
  const int64_t B = in.shape[0], T = in.shape[1];
  STRATA_CHECK(B >= 1 && T >= 1, "Model: empty batch " << in.str());
  STRATA_CHECK(T <= config_.max_seq, "Model: sequence length " << T << " is longer than the model's max_seq "
                                                               << config_.max_seq
                                                               << "; shorten the sequence or raise max_seq");
  check_tokens("inputs", in);
  for (const NamedInput& e : batch.extra) {
    bool used = false;
    for (const std::string& name : wiring_->extra_names) used = used || name == e.name;
    STRATA_CHECK(used, "Model: the batch has an extra input '" << e.name << "' that no unit reads (Unit::batch_input)");
    const TensorView& t = e.tokens;
    STRATA_CHECK(t.data && t.dtype == DType::i32 && t.ndim == 2 && t.shape[0] == B && t.shape[1] == T,
                 "Model: extra input '" << e.name << "' must be (B, T) = (" << B << ", " << T
                                        << ") i32 like the inputs, got " << (t.ndim ? t.str() : std::string("undefined"))
                                        << "; pad the shorter sequences to one length");
    check_tokens(("extra input '" + e.name + "'").c_str(), t);
  }
  for (const std::string& name : wiring_->extra_names)
    STRATA_CHECK(extra_input(batch, name), "Model: a unit reads the batch input '"
                                               << name << "', but the batch has no such extra input; add it to Batch::extra");
  if (batch.targets.data) {
    const TensorView& tg = batch.targets;
    STRATA_CHECK(tg.dtype == DType::i32 && tg.ndim == 2 && tg.shape[0] == B && tg.shape[1] == T,
                 "Model: targets must be (B, T) = (" << B << ", " << T << ") i32 like the inputs, got " << tg.str());
    units_.back()->check_targets(tg, config_);  // what a target means is the last unit's
  }
}

void Unit::check_targets(const TensorView& targets, const ModelConfig& config) const {
  const int32_t* t = targets.ptr<int32_t>();
  const int64_t T = targets.shape[1];
  for (int64_t i = 0; i < targets.numel(); ++i)
    STRATA_CHECK(t[i] == -100 || (t[i] >= 0 && t[i] < config.vocab_size),
                 "Model: target " << t[i] << " at row " << i / T << ", position " << i % T
                                  << " is outside the vocabulary [0, " << config.vocab_size
                                  << ") and is not the ignore index -100");
}

void Model::ensure_activations(int64_t B, int64_t T) {
  const int64_t rows = B * T;
  const DType dt = precision_dtype(precision_);
  if (!acts_) acts_ = std::make_unique<Activations>();
  for (auto& u : units_) u->reserve(*device_, dt, B, T);
  if (adapter_) adapter_->reserve(*device_, dt, B, T);
  size_t transient = 0;
  for (auto& u : units_) transient = std::max(transient, u->transient_bytes(dt, B, T));
  if (acts_->transient.size() < transient || (transient == 0 && acts_->transient.size() > 0)) {
    acts_->transient = Buffer();
    if (transient) acts_->transient = Buffer(*device_, transient, "recompute workspace");
  }
  if (acts_->capacity_rows >= rows) return;
  Activations& a = *acts_;
  Buffer keep_transient = std::move(a.transient);
  a = Activations{};
  a.transient = std::move(keep_transient);
  a.capacity_rows = rows;
  const size_t stream_bytes = carve_bytes(dt, rows * config_.d_model);
  for (int u = 0; u + 1 < num_units(); ++u) a.residual.emplace_back(*device_, stream_bytes, "residual stream");
  a.grad_a = Buffer(*device_, stream_bytes, "residual gradient");
  a.grad_b = Buffer(*device_, stream_bytes, "residual gradient");
  a.losses = Buffer(*device_, carve_bytes(DType::f32, rows), "losses");
  a.tokens = Buffer(*device_, carve_bytes(DType::i32, rows), "tokens");
  a.targets = Buffer(*device_, carve_bytes(DType::i32, rows), "targets");
  for (size_t k = 0; k < wiring_->extra_names.size(); ++k)
    a.extra_tokens.emplace_back(*device_, carve_bytes(DType::i32, rows), "named batch input");
  for (size_t k = 0; k < wiring_->publishers.size(); ++k)
    a.side_grads.emplace_back(*device_, stream_bytes, "side activation gradient");
  size_t scratch = 64;
  for (auto& u : units_) scratch = std::max(scratch, u->scratch_bytes(dt, rows));
  a.scratch = Buffer(*device_, scratch, "backward scratch");
}


UnitIO Model::unit_io(int u, int64_t B, int64_t T) const {
  const DType dt = precision_dtype(precision_);
  const Activations& a = *acts_;
  const Wiring& w = *wiring_;
  auto stream = [&](const Buffer& b) { return TensorView(b.data(), dt, {B, T, config_.d_model}, device_); };
  UnitIO io;
  const int in = w.input[size_t(u)];
  io.tokens = TensorView(in > 0 ? a.extra_tokens[size_t(in - 1)].data() : a.tokens.data(), DType::i32, {B, T}, device_);
  if (in < 0) io.x = stream(a.residual[size_t(u - 1)]);
  if (u + 1 < num_units()) io.y = stream(a.residual[size_t(u)]);
  for (int src : w.side_from[size_t(u)]) {
    io.side.push_back(stream(a.residual[size_t(src)]));
    io.d_side.push_back(stream(a.side_grads[size_t(w.side_slot[size_t(src)])]));
  }
  io.transient = a.transient.data();
  return io;
}

void Model::run_forward(const Batch& batch, int64_t B, int64_t T, const StepKey& key, bool train) {
  const DType dt = precision_dtype(precision_);
  Activations& a = *acts_;
  Stream& s = device_->stream();
  s.copy(a.tokens.data(), batch.inputs.data, size_t(B * T) * 4);  // inputs are host memory
  for (size_t k = 0; k < wiring_->extra_names.size(); ++k)
    s.copy(a.extra_tokens[k].data(), extra_input(batch, wiring_->extra_names[k])->data, size_t(B * T) * 4);
  for (int u = 0; u + 1 < num_units(); ++u) {
    UnitContext ctx{s, config_, dt, u, B, T, key, train};
    UnitIO io = unit_io(u, B, T);
    units_[size_t(u)]->forward(ctx, acquire(u, false), io);
    release(u, false);
  }
  last_key_ = key;
  last_B_ = B;
  last_T_ = T;
  have_saved_ = train;
  saved_loss_ = false;
}

float Model::forward(const Batch& batch, const StepKey& key, bool train) {
  check_batch(batch);
  STRATA_CHECK(batch.targets.data, "Model::forward: targets are required to compute the loss");
  const int64_t B = batch.inputs.shape[0], T = batch.inputs.shape[1];
  ensure_activations(B, T);
  const DType dt = precision_dtype(precision_);
  Activations& a = *acts_;
  run_forward(batch, B, T, key, train);

  const int head = num_units() - 1;
  device_->stream().copy(a.targets.data(), batch.targets.data, size_t(B * T) * 4);
  UnitContext ctx{device_->stream(), config_, dt, head, B, T, key, train};
  UnitIO io = unit_io(head, B, T);
  io.targets = TensorView(a.targets.data(), DType::i32, {B, T}, device_);
  io.losses = TensorView(a.losses.data(), DType::f32, {B * T}, device_);
  units_[size_t(head)]->forward(ctx, acquire(head, false), io);
  release(head, false);
  std::vector<float> losses(size_t(B * T));
  device_->stream().copy(losses.data(), io.losses.data, losses.size() * 4);
  device_->stream().synchronize();
  const int32_t* tg = batch.targets.ptr<int32_t>();  // the host copy
  double sum = 0;
  int64_t valid = 0;
  for (int64_t i = 0; i < B * T; ++i)
    if (tg[i] != -100) {
      sum += losses[i];
      ++valid;
    }
  last_valid_ = valid;
  saved_loss_ = train;
  return valid ? float(sum / double(valid)) : 0.0f;
}

void Model::backward(float d_loss_scale) {
  STRATA_CHECK(have_saved_, "Model::backward: call forward(batch, key, train = true) first; "
                            "each forward supports one backward");
  STRATA_CHECK(saved_loss_, "Model::backward: the last forward was forward_outputs, which computes no loss; "
                            "back-propagate a loss of your own with backward_from");
  run_backward(num_units() - 1, last_valid_ ? d_loss_scale / float(last_valid_) : 0.0f);
}

void Model::forward_outputs(const Batch& batch, const StepKey& key, bool train) {
  check_batch(batch);
  const int64_t B = batch.inputs.shape[0], T = batch.inputs.shape[1];
  ensure_activations(B, T);
  run_forward(batch, B, T, key, train);
  last_valid_ = 0;
}

void Model::backward_from(int unit, const TensorView& d_output) {
  STRATA_CHECK(have_saved_, "Model::backward_from: call forward_outputs or forward with train = true first; "
                            "each forward supports one backward");
  STRATA_CHECK(unit >= 0 && unit + 1 < num_units(),
               "Model::backward_from: unit " << unit << " of " << num_units()
                                             << "; the gradient must be of a unit before the last (whose output is the "
                                                "loss: use backward())");
  const DType dt = precision_dtype(precision_);
  const TensorView& d = d_output;
  STRATA_CHECK(d.data && d.dtype == dt && d.numel() == last_B_ * last_T_ * config_.d_model &&
                   d.size(-1) == config_.d_model,
               "Model::backward_from: d_output must be (B, T, C) = (" << last_B_ << ", " << last_T_ << ", "
                                                                      << config_.d_model << ") " << dtype_name(dt)
                                                                      << " like unit " << unit << "'s output, got "
                                                                      << (d.ndim ? d.str() : std::string("undefined")));
  device_->stream().copy(acts_->grad_a.data(), d.data, d.nbytes());
  run_backward(unit, 0.0f);
}

// The gradient reaching unit u's output is the trunk's (from unit u+1's dx, when u+1
// reads the stream) plus, for a publisher, what its readers added to its side
// gradient; a unit that gets neither is skipped (its gradients would be += 0).
void Model::run_backward(int top, float d_loss) {
  have_saved_ = false;
  const DType dt = precision_dtype(precision_);
  Activations& a = *acts_;
  const Wiring& w = *wiring_;
  const int64_t B = last_B_, T = last_T_;
  Stream& s = device_->stream();
  auto stream = [&](const Buffer& b) { return TensorView(b.data(), dt, {B, T, config_.d_model}, device_); };
  for (const Buffer& g : a.side_grads) ops::fill_zero(stream(g), s);
  TensorView dy = stream(a.grad_a), dx = stream(a.grad_b);
  bool trunk = top + 1 < num_units();  // backward_from: the caller's gradient is in grad_a
  for (int u = top; u >= 0; --u) {
    const int slot = w.side_slot[size_t(u)];
    UnitIO io = unit_io(u, B, T);
    if (u + 1 < num_units()) {
      if (slot >= 0 && trunk) ops::add({dy, dy, stream(a.side_grads[size_t(slot)])}, s);
      io.dy = slot >= 0 && !trunk ? stream(a.side_grads[size_t(slot)]) : dy;
      if (slot < 0 && !trunk) continue;  // no gradient reaches this unit
    }
    // A frozen unit that reads no stream (the embedding) has parameter gradients only.
    if (frozen_ && !w.reads_stream(u)) {
      trunk = false;
      continue;
    }
    if (w.reads_stream(u)) io.dx = dx;
    io.d_loss = d_loss;
    if (u + 1 == num_units()) io.targets = TensorView(a.targets.data(), DType::i32, {B, T}, device_);
    UnitContext ctx{s, config_, dt, u, B, T, last_key_, true};
    units_[size_t(u)]->backward(ctx, acquire(u, true), io, a.scratch.data());
    release(u, true);
    trunk = w.reads_stream(u);
    if (trunk) std::swap(dy, dx);  // this unit's dx is the next (earlier) unit's dy
  }
}

TensorView Model::unit_output(int u) const {
  STRATA_CHECK(u >= 0 && u < num_units(), "Model::unit_output: unit " << u << " of " << num_units());
  if (!acts_ || u + 1 >= num_units() || last_B_ == 0) return TensorView{};
  return TensorView(acts_->residual[size_t(u)].data(), precision_dtype(precision_),
                    {last_B_, last_T_, config_.d_model}, device_);
}

std::vector<float> Model::last_logits(const TensorView& inputs) {
  const Batch batch{inputs, {}};
  require_lm_head(*units_.back());
  check_batch(batch);
  const int64_t B = inputs.shape[0], T = inputs.shape[1];
  ensure_activations(B, T);
  const DType dt = precision_dtype(precision_);
  Activations& a = *acts_;
  run_forward(batch, B, T, StepKey{}, false);
  const int head = num_units() - 1;
  // Gather the last position of each row into the gradient buffer, used as scratch.
  const size_t row_bytes = size_t(config_.d_model) * dtype_size(dt);
  const char* src = static_cast<const char*>(a.residual[size_t(head - 1)].data());
  Stream& s = device_->stream();
  for (int64_t b = 0; b < B; ++b)
    s.copy(static_cast<char*>(a.grad_a.data()) + size_t(b) * row_bytes, src + size_t(b * T + T - 1) * row_bytes,
           row_bytes);
  Buffer logits_device(*device_, size_t(B * config_.vocab_size) * 4, "sampling logits");  // (B, V) f32
  UnitContext ctx{s, config_, dt, head, B, 1, StepKey{}, false};
  head_logits(*units_[size_t(head)], ctx, acquire(head, false),
              TensorView(a.grad_a.data(), dt, {B, config_.d_model}, device_),
              TensorView(logits_device.data(), DType::f32, {B, config_.vocab_size}, device_));
  release(head, false);
  std::vector<float> logits(size_t(B * config_.vocab_size));
  s.copy(logits.data(), logits_device.data(), logits.size() * 4);
  s.synchronize();
  have_saved_ = false;
  return logits;
}

std::vector<float> Model::logits(const Batch& batch) {
  require_lm_head(*units_.back());
  check_batch(batch);
  const int64_t B = batch.inputs.shape[0], T = batch.inputs.shape[1];
  ensure_activations(B, T);
  const DType dt = precision_dtype(precision_);
  run_forward(batch, B, T, StepKey{}, false);
  const int head = num_units() - 1;
  const int64_t V = config_.vocab_size;
  Buffer logits_device(*device_, size_t(B * T * V) * 4, "logits");  // (B*T, V) f32
  Stream& s = device_->stream();
  UnitContext ctx{s, config_, dt, head, B, T, StepKey{}, false};
  head_logits(*units_[size_t(head)], ctx, acquire(head, false),
              TensorView(acts_->residual[size_t(head - 1)].data(), dt, {B * T, config_.d_model}, device_),
              TensorView(logits_device.data(), DType::f32, {B * T, V}, device_));
  release(head, false);
  std::vector<float> logits(size_t(B * T * V));
  s.copy(logits.data(), logits_device.data(), logits.size() * 4);
  s.synchronize();
  return logits;
}

}  // namespace strata
