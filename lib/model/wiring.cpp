// Side inputs: the checked wiring of a Model's units (wiring.h) and make_wired_unit,
// which gives any unit a name, a batch input and a published name. The wrapper
// forwards everything else, so the wrapped unit's forward, backward, recompute and
// saved activations are exactly its own.
#include "wiring.h"

#include "strata/error.h"

namespace strata {

namespace {

std::string unit_label(const std::vector<std::unique_ptr<Unit>>& units, size_t u) {
  return "unit " + std::to_string(u) + " '" + units[u]->name() + "'";
}

class WiredUnit final : public Unit {
 public:
  WiredUnit(std::unique_ptr<Unit> inner, const UnitWiring& w) : inner_(std::move(inner)), w_(w) {}
  std::string name() const override { return w_.name.empty() ? inner_->name() : w_.name; }
  std::vector<ParamSpec> param_specs() const override { return inner_->param_specs(); }
  std::vector<std::string> borrowed() const override { return inner_->borrowed(); }
  void reserve(Device& d, DType dt, int64_t B, int64_t T) override { inner_->reserve(d, dt, B, T); }
  void set_recompute(Recompute mode) override { inner_->set_recompute(mode); }
  void set_adapter(LinearAdapter* adapter) override { inner_->set_adapter(adapter); }
  size_t transient_bytes(DType dt, int64_t B, int64_t T) const override { return inner_->transient_bytes(dt, B, T); }
  size_t scratch_bytes(DType dt, int64_t rows) const override { return inner_->scratch_bytes(dt, rows); }
  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override { inner_->forward(ctx, p, io); }
  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    inner_->backward(ctx, p, io, scratch);
  }
  void check_targets(const TensorView& targets, const ModelConfig& config) const override {
    inner_->check_targets(targets, config);
  }
  std::string batch_input() const override { return w_.batch_input.empty() ? inner_->batch_input() : w_.batch_input; }
  std::vector<std::string> reads() const override { return inner_->reads(); }
  std::string publishes() const override { return w_.publishes.empty() ? inner_->publishes() : w_.publishes; }

 private:
  std::unique_ptr<Unit> inner_;
  UnitWiring w_;
};

}  // namespace

std::unique_ptr<Unit> make_wired_unit(std::unique_ptr<Unit> unit, const UnitWiring& wiring) {
  STRATA_CHECK(unit, "make_wired_unit: the unit is null");
  return std::make_unique<WiredUnit>(std::move(unit), wiring);
}

Model::Wiring Model::Wiring::of(const std::vector<std::unique_ptr<Unit>>& units) {
  Wiring w;
  const size_t n = units.size();
  std::vector<std::string> published;  // per unit, "" none
  for (size_t u = 0; u < n; ++u) {
    const std::string in = units[u]->batch_input();
    if (in.empty())
      w.input.push_back(u == 0 ? 0 : -1);
    else if (in == "tokens")
      w.input.push_back(0);
    else {
      size_t k = 0;
      while (k < w.extra_names.size() && w.extra_names[k] != in) ++k;
      if (k == w.extra_names.size()) w.extra_names.push_back(in);
      w.input.push_back(int(k) + 1);
    }
    std::vector<int> from;
    for (const std::string& name : units[u]->reads()) {
      int src = -1;
      for (size_t v = 0; v < n && src < 0; ++v)
        if (units[v]->publishes() == name) src = int(v);
      STRATA_CHECK(src >= 0, "Model: " << unit_label(units, u) << " reads '" << name
                                       << "', which no unit publishes; publish it from an earlier unit "
                                          "(Unit::publishes, or make_wired_unit)");
      STRATA_CHECK(size_t(src) < u, "Model: " << unit_label(units, u) << " reads '" << name << "', published by "
                                              << unit_label(units, size_t(src))
                                              << " which runs after it; a unit reads only what earlier units publish");
      from.push_back(src);
    }
    w.side_from.push_back(std::move(from));
    const std::string pub = units[u]->publishes();
    for (size_t v = 0; v < u && !pub.empty(); ++v)
      STRATA_CHECK(published[v] != pub, "Model: " << unit_label(units, v) << " and " << unit_label(units, u)
                                                  << " both publish '" << pub << "'; published names must be unique");
    published.push_back(pub);
    w.side_slot.push_back(pub.empty() ? -1 : int(w.publishers.size()));
    if (!pub.empty()) w.publishers.push_back(int(u));
  }
  const size_t last = n - 1;
  STRATA_CHECK(w.reads_stream(int(last)) && last > 0,
               "Model: the last " << unit_label(units, last) << " reads batch input '" << units[last]->batch_input()
                                  << "'; the last unit turns the stream into losses and must read the stream");
  STRATA_CHECK(published[last].empty(), "Model: the last " << unit_label(units, last) << " publishes '"
                                                          << published[last]
                                                          << "', but its output is the loss; publish from a unit before it");
  return w;
}

}  // namespace strata
