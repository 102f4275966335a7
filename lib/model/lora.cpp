// LoRA adapters: layout, initialisation, the forward/backward side path the blocks
// call, the optimizer step and merge/unmerge. Per adapter, with s = alpha / r:
//   forward   h = s * drop(x) A^T  (kept);  y += h B^T
//   backward  dB += d_out^T h;  dh = s * d_out B;  dA += dh^T drop(x);  d_x += drop'(dh A)
// Invariant: the dropout mask is replayed from the same Philox key in backward, and
// h is the adapter's own saved state, so every recompute mode sees the same values.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../optim/adamw_args.h"
#include "lora_impl.h"
#include "strata/error.h"

namespace strata {

namespace {
constexpr int64_t kAlign = 16;
int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

std::string site_names(const std::vector<AdapterSite>& sites) {
  std::string out;
  for (const AdapterSite& s : sites) out += (out.empty() ? "" : ", ") + s.name;
  return out.empty() ? "none" : out;
}

// The unit index of each built-in block "blocks.<l>" (l < n_layers), for the PEFT
// targets; a unit that declares other sites, or a missing block, is an error.
std::vector<int> builtin_blocks(const Model& model, const LoraOptions& o) {
  const int layers = int(model.config().n_layers);
  std::vector<int> blocks(size_t(layers), -1);
  const char* builtin[4] = {"qkv", "attn_proj", "fc", "mlp_proj"};
  for (int u = 0; u < model.num_units(); ++u) {
    const Unit& unit = model.unit(u);
    const std::vector<AdapterSite> sites = unit.adapter_sites();
    if (sites.empty()) continue;
    bool is_block = sites.size() == 4;
    for (size_t i = 0; is_block && i < 4; ++i) is_block = sites[i].name == builtin[i] && sites[i].id == int(i);
    int l = -1;
    for (int k = 0; is_block && k < layers && l < 0; ++k)
      if (unit.name() == "blocks." + std::to_string(k)) l = k;
    STRATA_CHECK(l >= 0, "Lora: unit '" << unit.name() << "' is not a built-in block, so the PEFT targets ("
                                        << lora_targets_name(o.targets) << ") do not apply to it; select its "
                                        << "declared adapter sites (" << site_names(sites)
                                        << ") by name with LoraOptions::sites (strata's own adapter files)");
    blocks[size_t(l)] = u;
  }
  for (int l = 0; l < layers; ++l)
    STRATA_CHECK(blocks[size_t(l)] >= 0, "Lora: the model has no built-in block 'blocks."
                                             << l << "' for the PEFT targets (" << lora_targets_name(o.targets)
                                             << "); adapt its units' declared sites with LoraOptions::sites");
  return blocks;
}

// Adapters on the declared sites that o.sites names ("*": all), in strata's names.
template <class Add>
void add_declared_sites(const Model& model, const LoraOptions& o, Add&& add) {
  const bool every = std::find(o.sites.begin(), o.sites.end(), "*") != o.sites.end();
  std::vector<bool> used(o.sites.size(), false);
  std::vector<AdapterSite> declared;
  for (int u = 0; u < model.num_units(); ++u) {
    const Unit& unit = model.unit(u);
    const std::vector<ParamSpec> specs = unit.param_specs();
    std::vector<bool> ids(kAdapterSites, false);
    int slot = 0;
    for (const AdapterSite& s : unit.adapter_sites()) {
      declared.push_back(s);
      STRATA_CHECK(s.id >= 0 && s.id < kAdapterSites && !ids[size_t(s.id)],
                   "Lora: unit '" << unit.name() << "' declares adapter site '" << s.name << "' with id " << s.id
                                  << "; ids must be unique within the unit and in [0, " << kAdapterSites << ")");
      ids[size_t(s.id)] = true;
      auto it = std::find(o.sites.begin(), o.sites.end(), s.name);
      if (it == o.sites.end() && !every) continue;
      if (it != o.sites.end()) used[size_t(it - o.sites.begin())] = true;
      const ParamSpec* spec = nullptr;
      for (const ParamSpec& p : specs)
        if (p.name == s.param) spec = &p;
      STRATA_CHECK(spec && spec->shape.size() == 2,
                   "Lora: adapter site '" << s.name << "' of unit '" << unit.name() << "' names parameter '" << s.param
                                          << "', which is not a 2-D (out, in) parameter of that unit");
      STRATA_CHECK(slot < kAdapterSlots, "Lora: unit '" << unit.name() << "' would get more than " << kAdapterSlots
                                                        << " adapters; select fewer of its sites");
      LoraAdapter a;
      a.unit = u;
      a.layer = u;
      a.site = s.id;
      a.slot = slot++;
      a.out = spec->shape[0];
      a.in = spec->shape[1];
      a.weight = unit.name() + "." + s.param;
      a.save_begin = 0;
      a.save_end = a.out;
      add(std::move(a), unit.name() + "." + s.name);
    }
  }
  for (size_t i = 0; i < o.sites.size(); ++i)
    STRATA_CHECK(used[i] || o.sites[i] == "*", "Lora: no unit of the model declares an adapter site '"
                                                   << o.sites[i] << "' (declared: " << site_names(declared) << ")");
}
}  // namespace

int64_t LoraTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const char* lora_targets_name(LoraTargets t) {
  switch (t) {
    case LoraTargets::query_value: return "qv";
    case LoraTargets::attention: return "attention";
    case LoraTargets::all_linear: return "all";
  }
  return "?";
}

LoraTargets lora_targets_from_string(const std::string& n) {
  if (n == "qv" || n == "query_value") return LoraTargets::query_value;
  if (n == "attention" || n == "attn") return LoraTargets::attention;
  if (n == "all" || n == "all_linear") return LoraTargets::all_linear;
  STRATA_FAIL("unknown LoRA targets '" << n << "': use qv (query and value), attention or all (every linear layer)");
}

TensorView Lora::Impl::flat(const Buffer& b, DType dt) const { return TensorView(b.data(), dt, {numel}, &model->device()); }

TensorView Lora::Impl::view(const Buffer& b, DType dt, const LoraTensor& t) const {
  return TensorView(static_cast<char*>(b.data()) + size_t(t.offset) * dtype_size(dt), dt, {t.shape[0], t.shape[1]},
                    &model->device());
}

std::vector<std::string> Lora::Impl::target_modules() const {
  if (!options.sites.empty()) return options.sites;  // strata's own names: the selected sites
  const bool gpt2 = layout == HfLayout::gpt2;
  switch (options.targets) {
    case LoraTargets::query_value: return gpt2 ? std::vector<std::string>{"c_attn"} : std::vector<std::string>{"q_proj", "v_proj"};
    case LoraTargets::attention:
      return gpt2 ? std::vector<std::string>{"attn.c_attn", "attn.c_proj"}
                  : std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"};
    case LoraTargets::all_linear:
      return gpt2 ? std::vector<std::string>{"c_attn", "c_proj", "c_fc"}
                  : std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  }
  return {};
}

Lora::Lora(Model& model, const LoraOptions& o) : impl_(std::make_unique<Impl>()) {
  STRATA_CHECK(!model.lora(), "Lora: the model already has a Lora attached");
  STRATA_CHECK(o.rank >= 1, "Lora: rank " << o.rank << " must be at least 1");
  STRATA_CHECK(o.alpha > 0, "Lora: alpha " << o.alpha << " must be positive");
  STRATA_CHECK(o.dropout >= 0 && o.dropout < 1, "Lora: dropout " << o.dropout << " must be in [0, 1)");
  Impl& m = *impl_;
  m.model = &model;
  m.options = o;
  m.scale = o.alpha / float(o.rank);
  m.dtype = precision_dtype(model.precision());
  const ModelConfig& c = model.config();
  try {
    m.layout = hf_layout_for(c);
  } catch (const Error&) {  // not exportable as either: name by the closer family
    m.layout = c.mlp == MlpKind::swiglu ? HfLayout::llama : HfLayout::gpt2;
  }
  const bool gpt2 = m.layout == HfLayout::gpt2;
  const int64_t C = c.d_model, H = c.d_mlp, fc_out = c.mlp == MlpKind::swiglu ? 2 * H : H, r = o.rank;
  // qkv rows: q [0, Cq), k, v of Ckv each; Cq = C unless d_head is set.
  const int64_t Cq = c.attention_width(), Ckv = c.kv_heads() * c.head_dim(), Q = c.qkv_width();
  const bool attn = o.targets != LoraTargets::query_value, all = o.targets == LoraTargets::all_linear;
  m.at_site.assign(size_t(model.num_units() * kAdapterSites), {});
  // Lays out A [r, in] and B [out, r] of `a` under `key` and files it under its site.
  auto add = [&](LoraAdapter a, const std::string& key) {
    a.a_tensor = int(m.tensors.size());
    m.tensors.push_back({key + ".lora_A.weight", m.numel, {r, a.in}, {}});
    m.numel = round_up(m.numel + r * a.in, kAlign);
    a.b_tensor = int(m.tensors.size());
    m.tensors.push_back({key + ".lora_B.weight", m.numel, {a.out, r}, a.dead});
    m.numel = round_up(m.numel + a.out * r, kAlign);
    m.at_site[size_t(a.unit * kAdapterSites + a.site)].push_back(int(m.adapters.size()));
    m.adapters.push_back(std::move(a));
  };
  if (!o.sites.empty()) {
    add_declared_sites(model, o, add);
  } else {
    const std::vector<int> blocks = builtin_blocks(model, o);
    // (site, module path, live row range [b, e) of the output, other live range)
    struct Target {
      int site;
      std::string path;
      int64_t b, e, b2 = -1, e2 = -1;
    };
    for (int l = 0; l < int(c.n_layers); ++l) {
      std::vector<Target> ts;
      const std::string L = std::to_string(l);
      if (gpt2) {
        const std::string h = "transformer.h." + L + ".";
        if (attn) ts.push_back({0, h + "attn.c_attn", 0, Q});
        else ts.push_back({0, h + "attn.c_attn", 0, Cq, Cq + Ckv, Q});  // PEFT adapts c_attn whole: k rows dead
        if (attn) ts.push_back({1, h + "attn.c_proj", 0, C});
        if (all) ts.push_back({2, h + "mlp.c_fc", 0, fc_out});
        if (all) ts.push_back({3, h + "mlp.c_proj", 0, C});
      } else {
        const std::string h = "model.layers." + L + ".";
        ts.push_back({0, h + "self_attn.q_proj", 0, Cq});
        if (attn) ts.push_back({0, h + "self_attn.k_proj", Cq, Cq + Ckv});
        ts.push_back({0, h + "self_attn.v_proj", Cq + Ckv, Q});
        if (attn) ts.push_back({1, h + "self_attn.o_proj", 0, C});
        if (all && c.mlp == MlpKind::swiglu) {
          ts.push_back({2, h + "mlp.gate_proj", 0, H});
          ts.push_back({2, h + "mlp.up_proj", H, 2 * H});
        } else if (all) {
          ts.push_back({2, h + "mlp.up_proj", 0, H});
        }
        if (all) ts.push_back({3, h + "mlp.down_proj", 0, C});
      }
      const Unit& block = model.unit(blocks[size_t(l)]);
      const std::vector<AdapterSite> sites = block.adapter_sites();
      const int64_t ins[4] = {C, Cq, C, H}, outs[4] = {Q, C, fc_out, C};
      int slot = 0;
      for (const Target& t : ts) {
        LoraAdapter a;
        a.unit = blocks[size_t(l)];
        a.layer = l;
        a.site = t.site;
        a.slot = slot++;
        a.in = ins[t.site];
        a.out = outs[t.site];
        a.weight = block.name() + "." + sites[size_t(t.site)].param;
        // Live rows: [b, e) and optionally [b2, e2); everything else is dead.
        int64_t cursor = 0;
        std::vector<std::pair<int64_t, int64_t>> live{{t.b, t.e}};
        if (t.b2 >= 0) live.push_back({t.b2, t.e2});
        for (auto [b, e] : live) {
          if (b > cursor) a.dead.push_back({cursor, b});
          cursor = e;
        }
        if (cursor < a.out) a.dead.push_back({cursor, a.out});
        a.save_begin = t.b2 >= 0 ? 0 : t.b;  // GPT-2 q+v: c_attn's B is saved whole
        a.save_end = t.b2 >= 0 ? a.out : t.e;
        add(std::move(a), "base_model.model." + t.path);
      }
    }
  }
  m.numel = std::max<int64_t>(m.numel, 1);
  Device& dev = model.device();
  const size_t n = size_t(m.numel);
  m.params = Buffer(dev, n * dtype_size(m.dtype), "LoRA parameters");
  m.grads = Buffer(dev, n * 4, "LoRA gradients");
  m.m = Buffer(dev, n * 4, "LoRA exp_avg");
  m.v = Buffer(dev, n * 4, "LoRA exp_avg_sq");
  if (model.precision() != Precision::fp32) m.master = Buffer(dev, n * 4, "LoRA master weights");

  // A ~ U(-1/sqrt(in), 1/sqrt(in)): PEFT's kaiming_uniform_(a = sqrt(5)); B = 0.
  std::vector<float> host(n, 0.0f);
  for (const LoraAdapter& a : m.adapters) {
    const LoraTensor& t = m.tensors[size_t(a.a_tensor)];
    const float bound = 1.0f / std::sqrt(float(a.in));
    num::RandomKey key{o.seed, uint32_t(a.layer), uint32_t(0x4c000000u | uint32_t(a.slot))};
    for (int64_t i = 0; i < t.numel(); ++i)
      host[size_t(t.offset + i)] = bound * (2.0f * num::philox_uniform(key, uint64_t(i)) - 1.0f);
  }
  Stream& s = dev.stream();
  copy_from_host_f32(m.flat(m.params, m.dtype), host.data());
  if (m.master.data()) copy_from_host_f32(m.flat(m.master, DType::f32), host.data());
  ops::fill_zero(m.flat(m.grads, DType::f32), s);
  ops::fill_zero(m.flat(m.m, DType::f32), s);
  ops::fill_zero(m.flat(m.v, DType::f32), s);
  s.synchronize();
  model.freeze_base();
  model.attach_lora(this, impl_.get());
}

Lora::~Lora() {
  if (impl_->model->lora() == this) impl_->model->attach_lora(nullptr, nullptr);
}

const LoraOptions& Lora::options() const { return impl_->options; }
float Lora::scale() const { return impl_->scale; }
const std::vector<LoraTensor>& Lora::tensors() const { return impl_->tensors; }
bool Lora::merged() const { return impl_->merged; }

int64_t Lora::num_parameters() const {
  int64_t n = 0;
  for (const LoraAdapter& a : impl_->adapters)
    n += impl_->options.rank * (a.in + (a.save_end - a.save_begin));
  return n;
}

namespace {
const LoraTensor& find_tensor(const Lora::Impl& m, const std::string& key) {
  for (const LoraTensor& t : m.tensors)
    if (t.key == key) return t;
  STRATA_FAIL("Lora: no adapter tensor '" << key << "'; see Lora::tensors() for the keys");
}
}  // namespace

TensorView Lora::tensor(const std::string& key) const { return impl_->view(impl_->params, impl_->dtype, find_tensor(*impl_, key)); }
TensorView Lora::grad(const std::string& key) const { return impl_->view(impl_->grads, DType::f32, find_tensor(*impl_, key)); }
TensorView Lora::flat_params() const { return impl_->flat(impl_->params, impl_->dtype); }
TensorView Lora::flat_grads() const { return impl_->flat(impl_->grads, DType::f32); }

size_t Lora::param_bytes() const { return impl_->params.size(); }
size_t Lora::grad_bytes() const { return impl_->grads.size(); }
size_t Lora::optimizer_bytes() const { return impl_->m.size() + impl_->v.size() + impl_->master.size(); }

void Lora::zero_grad() { ops::fill_zero(flat_grads(), impl_->model->device().stream()); }

void Lora::step(const AdamWOptions& o, float lr, float grad_scale, int64_t t) {
  Impl& m = *impl_;
  const bool fp32 = m.model->precision() == Precision::fp32;
  ops::AdamWArgs a = adamw_args(o, nullptr, lr, grad_scale, t);
  // One call over the flat buffer: dead rows and padding have zero grads and stay zero.
  a.master = fp32 ? m.flat(m.params, DType::f32) : m.flat(m.master, DType::f32);
  a.grad = m.flat(m.grads, DType::f32);
  a.m = m.flat(m.m, DType::f32);
  a.v = m.flat(m.v, DType::f32);
  if (!fp32) a.working = m.flat(m.params, m.dtype);
  ops::adamw_step(a, m.model->device().stream());
}

void Lora::Impl::reserve(Device& device, DType dt, int64_t B, int64_t T) {
  const int64_t rows = B * T;
  if (rows <= capacity_rows) return;
  int64_t max_in = 1, max_out = 1;
  for (LoraAdapter& a : adapters) {
    max_in = std::max(max_in, a.in);
    max_out = std::max(max_out, a.out);
    a.h = Buffer(device, size_t(rows * options.rank) * dtype_size(dt), "LoRA h");
  }
  tmp = Buffer(device, size_t(rows * max_out) * dtype_size(dt), "LoRA workspace");
  xd = Buffer(device, size_t(rows * max_in) * dtype_size(dt), "LoRA workspace");
  dxa = Buffer(device, size_t(rows * max_in) * dtype_size(dt), "LoRA workspace");
  dh = Buffer(device, size_t(rows * options.rank) * dtype_size(dt), "LoRA workspace");
  capacity_rows = rows;
}

const std::vector<int>& Lora::Impl::at(const UnitContext& ctx, int site) const {
  STRATA_CHECK(site >= 0 && site < kAdapterSites && ctx.unit_index >= 0 && ctx.unit_index < model->num_units(),
               "LinearAdapter: site " << site << " of unit " << ctx.unit_index << " is outside [0, " << kAdapterSites
                                      << ") or the unit is not in the Lora's model");
  return at_site[size_t(ctx.unit_index * kAdapterSites + site)];
}

void Lora::Impl::forward(const UnitContext& ctx, int /*layer*/, int site, const TensorView& x, const TensorView& y) {
  if (merged) return;  // the base weights carry the adapters
  Stream& s = ctx.stream;
  const int64_t n = ctx.rows(), r = options.rank;
  Device* dev = &s.device();
  for (int i : at(ctx, site)) {
    LoraAdapter& a = adapters[size_t(i)];
    TensorView xin = x;
    const float p = ctx.train ? options.dropout : 0.0f;
    if (p > 0) {
      xin = TensorView(xd.data(), ctx.dtype, {n, a.in}, dev);
      ops::dropout_forward({xin, x, p, ctx.dropout_key(DropoutSite(4 + a.slot))}, s);
    }
    TensorView h(a.h.data(), ctx.dtype, {n, r}, dev);
    TensorView delta(tmp.data(), ctx.dtype, {n, a.out}, dev);
    ops::matmul_forward({h, xin, view(params, dtype, tensors[size_t(a.a_tensor)]), {}}, s);
    ops::scale({h, h, scale}, s);
    ops::matmul_forward({delta, h, view(params, dtype, tensors[size_t(a.b_tensor)]), {}}, s);
    ops::add({y, y, delta}, s);
  }
}

void Lora::Impl::backward(const UnitContext& ctx, int /*layer*/, int site, const TensorView& x, const TensorView& d_out,
                          const TensorView& d_inp) {
  STRATA_CHECK(!merged, "Lora: backward through merged adapters; unmerge() before training");
  Stream& s = ctx.stream;
  const int64_t n = ctx.rows(), r = options.rank;
  Device* dev = &s.device();
  for (int i : at(ctx, site)) {
    LoraAdapter& a = adapters[size_t(i)];
    const LoraTensor& ta = tensors[size_t(a.a_tensor)];
    const LoraTensor& tb = tensors[size_t(a.b_tensor)];
    TensorView h(a.h.data(), ctx.dtype, {n, r}, dev);
    TensorView d_h(dh.data(), ctx.dtype, {n, r}, dev);
    TensorView d_b = view(grads, DType::f32, tb);
    ops::matmul_backward({d_h, d_b, {}, d_out, h, view(params, dtype, tb)}, s);
    for (auto [b, e] : a.dead)  // other modules' rows: their gradient never reaches B
      ops::fill_zero(TensorView(static_cast<float*>(d_b.data) + b * r, DType::f32, {(e - b) * r}, dev), s);
    ops::scale({d_h, d_h, scale}, s);
    TensorView xin = x;
    const float p = ctx.train ? options.dropout : 0.0f;
    const num::RandomKey key = ctx.dropout_key(DropoutSite(4 + a.slot));
    if (p > 0) {
      xin = TensorView(xd.data(), ctx.dtype, {n, a.in}, dev);
      ops::dropout_forward({xin, x, p, key}, s);
    }
    TensorView d_x(dxa.data(), ctx.dtype, {n, a.in}, dev);
    ops::matmul_backward({d_x, view(grads, DType::f32, ta), {}, d_h, xin, view(params, dtype, ta)}, s);
    if (p > 0) ops::dropout_backward({d_x, d_x, p, key}, s);
    ops::add({d_inp, d_inp, d_x}, s);
  }
}

namespace {
// W (out, in) += sign * scale * B A, in f32 on the host, rounded to W's dtype.
void fold(Lora::Impl& m, const LoraAdapter& a, float sign) {
  TensorView w = m.model->parameter(a.weight);
  const int64_t r = m.options.rank;
  std::vector<float> W = copy_to_host_f32(w);
  const std::vector<float> A = copy_to_host_f32(m.view(m.params, m.dtype, m.tensors[size_t(a.a_tensor)]));
  const std::vector<float> B = copy_to_host_f32(m.view(m.params, m.dtype, m.tensors[size_t(a.b_tensor)]));
  std::vector<float> row(size_t(a.in));
  for (int64_t o = 0; o < a.out; ++o) {
    std::fill(row.begin(), row.end(), 0.0f);
    for (int64_t k = 0; k < r; ++k) {
      const float b = B[size_t(o * r + k)];
      if (b == 0.0f) continue;
      const float* ak = &A[size_t(k * a.in)];
      for (int64_t i = 0; i < a.in; ++i) row[size_t(i)] += b * ak[i];
    }
    float* wo = &W[size_t(o * a.in)];
    for (int64_t i = 0; i < a.in; ++i) wo[i] += sign * m.scale * row[size_t(i)];
  }
  copy_from_host_f32(w, W.data());
}
}  // namespace

void Lora::merge() {
  STRATA_CHECK(!impl_->merged, "Lora::merge: already merged");
  STRATA_CHECK(!impl_->model->store(), "Lora::merge: the base lives in a parameter store (offload or ZeRO-3), and "
                                        "merge rewrites its weights in place; merge on a resident copy of the base "
                                        "(save() the adapters and load() them there)");
  for (const LoraAdapter& a : impl_->adapters) fold(*impl_, a, 1.0f);
  impl_->merged = true;
}

void Lora::unmerge() {
  STRATA_CHECK(impl_->merged, "Lora::unmerge: not merged");
  STRATA_CHECK(!impl_->model->store(), "Lora::unmerge: the base lives in a parameter store (offload or ZeRO-3), and "
                                        "unmerge rewrites its weights in place; unmerge on a resident copy of the base "
                                        "(save() the adapters and load() them there)");
  for (const LoraAdapter& a : impl_->adapters) fold(*impl_, a, -1.0f);
  impl_->merged = false;
}

}  // namespace strata
