// Side inputs and custom losses (strata/unit.h, strata/model.h): the cross-attention
// unit against finite differences (its memory's gradient included), the graph checks
// at Model construction, gradients of a side activation from every reader reaching the
// encoder, backward from a caller's gradient of any unit's output, all-positions
// logits, and recompute of an encoder-decoder bitwise.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>

#include "seq2seq_support.h"
#include "strata/error.h"
#include "strata/gradcheck.h"
#include "strata/ops.h"

namespace strata::test {
namespace {

// The cross-attention unit with its side gradient broken: assigned (=) instead of
// added, or never written.
enum class SideFault { assigned, dropped };
class FaultySide final : public Unit {
 public:
  FaultySide(const ModelConfig& c, SideFault f) : inner_(make_cross_attention_unit(c, 0, "memory")), fault_(f) {}
  std::string name() const override { return "faulty"; }
  std::vector<ParamSpec> param_specs() const override { return inner_->param_specs(); }
  std::vector<std::string> reads() const override { return inner_->reads(); }
  void reserve(Device& d, DType dt, int64_t B, int64_t T) override { inner_->reserve(d, dt, B, T); }
  size_t scratch_bytes(DType dt, int64_t rows) const override { return inner_->scratch_bytes(dt, rows); }
  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override { inner_->forward(ctx, p, io); }
  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    if (fault_ == SideFault::assigned) ops::fill_zero(io.d_side[0], ctx.stream);
    UnitIO inner = io;
    std::vector<float> keep;
    if (fault_ == SideFault::dropped) keep = copy_to_host_f32(io.d_side[0]);
    inner_->backward(ctx, p, inner, scratch);
    if (fault_ == SideFault::dropped) copy_from_host_f32(io.d_side[0], keep.data());
  }

 private:
  std::unique_ptr<Unit> inner_;
  SideFault fault_;
};

bool mentions(const UnitGradCheckReport& r, const std::string& what) {
  for (const std::string& f : r.failures)
    if (f.find(what) != std::string::npos) return true;
  return false;
}

// Host copy of a resident fp32 parameter, written back element by element.
struct ParamProbe {
  Model& m;
  std::string name;
  std::vector<float> host;
  ParamProbe(Model& model, std::string n) : m(model), name(std::move(n)), host(copy_to_host_f32(m.parameter(name))) {}
  double get(int64_t i) const { return host[size_t(i)]; }
  void set(int64_t i, double v) {
    host[size_t(i)] = float(v);
    copy_from_host_f32(m.parameter(name), host.data());
  }
};

// The k elements of the largest analytic gradient: where f32 noise of a whole
// model's loss is small against the gradient.
std::vector<int64_t> largest(const std::vector<float>& g, size_t k) {
  std::vector<int64_t> e(g.size());
  for (size_t i = 0; i < e.size(); ++i) e[i] = int64_t(i);
  std::partial_sort(e.begin(), e.begin() + int64_t(std::min(k, e.size())), e.end(),
                    [&](int64_t a, int64_t b) { return std::fabs(g[size_t(a)]) > std::fabs(g[size_t(b)]); });
  e.resize(std::min(k, e.size()));
  std::sort(e.begin(), e.end());
  return e;
}

// The cross-attention unit with q and kv weights drawn 25x wider than its init, so
// the softmax is far from uniform and the query path's gradient (tiny at init) stands
// above the f32 noise of the check. The math checked is the unit's own.
class Sharpened final : public Unit {
 public:
  explicit Sharpened(std::unique_ptr<Unit> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> s = inner_->param_specs();
    for (ParamSpec& p : s)
      if (p.name == "q.weight" || p.name == "kv.weight") p.std *= 25.0f;
    return s;
  }
  std::vector<std::string> reads() const override { return inner_->reads(); }
  void set_recompute(Recompute mode) override { inner_->set_recompute(mode); }
  void reserve(Device& d, DType dt, int64_t B, int64_t T) override { inner_->reserve(d, dt, B, T); }
  size_t transient_bytes(DType dt, int64_t B, int64_t T) const override { return inner_->transient_bytes(dt, B, T); }
  size_t scratch_bytes(DType dt, int64_t rows) const override { return inner_->scratch_bytes(dt, rows); }
  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override { inner_->forward(ctx, p, io); }
  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    inner_->backward(ctx, p, io, scratch);
  }

 private:
  std::unique_ptr<Unit> inner_;
};

// Checks the analytic gradient of `name` (already in the model's grads) against
// finite differences of `loss`.
void check_param(Model& m, const std::string& name, const std::function<double()>& loss, double tol) {
  ParamProbe probe(m, name);
  const std::vector<float> g = copy_to_host_f32(m.parameter_grad(name));
  std::vector<double> analytic(g.begin(), g.end());
  const GradientCheck c = gradient_check(
      largest(g, 12), [&](int64_t i) { return probe.get(i); }, [&](int64_t i, double v) { probe.set(i, v); }, loss,
      analytic, 1e-2);
  double top = 0;
  for (int64_t i : c.elements) top = std::max(top, std::fabs(c.numeric[size_t(i)]));
  INFO(name << ": rel_error " << c.rel_error << ", bad signs " << c.bad_signs << ", largest |g_fd| " << top);
  CHECK(c.ok(tol));
  double norm = 0;
  for (float v : g) norm += double(v) * v;
  CHECK(norm > 0);  // a gradient really reached it
}

}  // namespace

TEST_CASE("the cross-attention unit passes the gradient check, its memory's gradient included", "[train][cpu]") {
  for (const char* arch : {"gpt", "llama", "llama-gqa"})
    for (Recompute mode : {Recompute::none, Recompute::full}) {
      const ModelConfig c = tiny_config(arch);
      Sharpened unit(make_cross_attention_unit(c, 0, "memory"));
      unit.set_recompute(mode);
      const UnitGradCheckReport r = check_unit_gradients(unit, c, cpu());
      INFO(arch << " " << recompute_name(mode) << "\n" << r.str());
      CHECK(r.ok());
      REQUIRE(r.tensors.size() >= 2);
      CHECK(r.tensors[1].name == "memory");
      CHECK(r.tensors.size() == 2 + (std::string(arch) == "gpt" ? 8 : 5));  // x, memory, every parameter present
    }
}

TEST_CASE("the gradient check catches a side gradient that is assigned or dropped", "[train][cpu]") {
  const ModelConfig c = tiny_config("gpt");
  FaultySide assigned(c, SideFault::assigned);
  const UnitGradCheckReport a = check_unit_gradients(assigned, c, cpu());
  CHECK(mentions(a, "side gradients accumulate"));
  FaultySide dropped(c, SideFault::dropped);
  const UnitGradCheckReport d = check_unit_gradients(dropped, c, cpu());
  CHECK(mentions(d, "gradient of memory disagrees"));
  CHECK_FALSE(mentions(d, "gradient of x"));
}

TEST_CASE("a bad side-input graph is rejected at construction, naming the units", "[train][cpu]") {
  const ModelConfig c = seq2seq_config("gpt", 1, 1);  // 5 units between first and last... see below
  auto build = [&](int variant) {
    std::vector<std::unique_ptr<Unit>> u = seq2seq_units(c, 1, 1);
    ModelConfig ec = c;
    ec.causal = false;
    if (variant == 0) u[1] = make_wired_unit(make_block_unit(ec, 0), {"encoder.blocks.0", "", ""});  // nobody publishes
    if (variant == 1) std::swap(u[1], u[4]);          // the reader before its publisher
    if (variant == 2) u[3] = make_wired_unit(make_block_unit(c, 0), {"", "", "memory"});  // published twice
    if (variant == 3) u.back() = make_wired_unit(make_head_unit(c), {"", "source", ""});
    if (variant == 4) u.back() = make_wired_unit(make_head_unit(c), {"", "", "logits"});
    return u;
  };
  const size_t live = cpu().arena().bytes_live();
  CHECK_THROWS_WITH(Model(c, build(0), cpu(), Precision::fp32, 1),
                    Catch::Contains("unit 4 'cross.0' reads 'memory', which no unit publishes"));
  CHECK_THROWS_WITH(Model(c, build(1), cpu(), Precision::fp32, 1),
                    Catch::Contains("unit 1 'cross.0' reads 'memory', published by unit 4 'encoder.blocks.0' which "
                                    "runs after it"));
  CHECK_THROWS_WITH(Model(c, build(2), cpu(), Precision::fp32, 1),
                    Catch::Contains("unit 1 'encoder.blocks.0' and unit 3 'blocks.0' both publish 'memory'"));
  CHECK_THROWS_WITH(Model(c, build(3), cpu(), Precision::fp32, 1),
                    Catch::Contains("the last unit 5 'head' reads batch input 'source'"));
  CHECK_THROWS_WITH(Model(c, build(4), cpu(), Precision::fp32, 1),
                    Catch::Contains("the last unit 5 'head' publishes 'logits'"));
  CHECK(cpu().arena().bytes_live() == live);  // nothing was laid out
}

TEST_CASE("a batch without the model's named inputs is rejected before any state changes", "[train][cpu]") {
  const ModelConfig c = seq2seq_config("gpt", 1, 1);
  Model m(c, seq2seq_units(c, 1, 1), cpu(), Precision::fp32, 1);
  Seq2SeqBatch good(2, 6, c.vocab_size, 1);
  Batch missing = good.batch();
  missing.extra.clear();
  CHECK_THROWS_WITH(m.forward(missing, {}, true), Catch::Contains("reads the batch input 'source'") &&
                                                      Catch::Contains("add it to Batch::extra"));
  Seq2SeqBatch shorter(2, 5, c.vocab_size, 1);
  Batch wrong = good.batch();
  wrong.extra[0].tokens = shorter.batch().extra[0].tokens;
  CHECK_THROWS_WITH(m.forward(wrong, {}, true), Catch::Contains("extra input 'source' must be (B, T) = (2, 6)"));
  Seq2SeqBatch bad = good;
  bad.source.inputs[3] = int32_t(c.vocab_size);
  CHECK_THROWS_WITH(m.forward(bad.batch(), {}, true),
                    Catch::Contains("of extra input 'source' at row 0, position 3 is outside the vocabulary"));
  Batch unknown = good.batch();
  unknown.extra.push_back({"labels", unknown.extra[0].tokens});
  CHECK_THROWS_WITH(m.forward(unknown, {}, true), Catch::Contains("extra input 'labels' that no unit reads"));
  CHECK_NOTHROW(m.forward(good.batch(), {}, true));
}

TEST_CASE("the gradients of a side activation from every reader reach the encoder", "[train][cpu]") {
  for (const char* arch : {"gpt", "llama"}) {
    INFO(arch);
    const ModelConfig c = seq2seq_config(arch, 1, 2);  // two cross-attention units read "memory"
    Model m(c, seq2seq_units(c, 1, 2), cpu(), Precision::fp32, 3);
    Seq2SeqBatch b(2, 6, c.vocab_size, 5);
    m.zero_grad();
    m.forward(b.batch(), {}, true);
    m.backward(1.0f);
    auto loss = [&] { return double(m.forward(b.batch(), {}, false)); };
    // The encoder gets its gradient only through both readers of "memory"; tensors
    // whose gradient stands well above the f32 noise of a whole model's loss.
    for (const char* name : {"encoder.embedding.wte.weight", "encoder.blocks.0.attn.qkv.weight", "cross.0.kv.weight",
                             "cross.1.kv.weight", "blocks.0.attn.qkv.weight"})
      check_param(m, name, loss, 2e-2);
  }
}

TEST_CASE("backward_from a unit's output is the gradient of the caller's loss", "[train][cpu]") {
  const ModelConfig c = seq2seq_config("gpt", 1, 2);
  Model m(c, seq2seq_units(c, 1, 2), cpu(), Precision::fp32, 3);
  Seq2SeqBatch b(2, 6, c.vocab_size, 5);
  for (int unit : {1, m.num_units() - 2}) {  // the encoder's output (memory), the decoder's last
    INFO("unit " << unit);
    const int64_t n = 2 * 6 * c.d_model;
    std::vector<float> w(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) w[size_t(i)] = std::sin(0.37f * float(i) + 0.1f);
    auto loss = [&] {  // L = sum(w * output), in double
      m.forward_outputs(b.batch(), {}, false);
      const std::vector<float> y = copy_to_host_f32(m.unit_output(unit));
      double l = 0;
      for (size_t i = 0; i < y.size(); ++i) l += double(w[i]) * double(y[i]);
      return l;
    };
    m.zero_grad();
    m.forward_outputs(b.batch(), {}, true);
    m.backward_from(unit, TensorView(w.data(), DType::f32, {2, 6, c.d_model}, &cpu()));
    check_param(m, "encoder.blocks.0.attn.proj.weight", loss, 1e-2);
    check_param(m, "encoder.embedding.wpe.weight", loss, 1e-2);
    if (unit > 1) check_param(m, "cross.1.q.weight", loss, 1e-2);
    if (unit == 1) {  // nothing after the unit is back-propagated
      const std::vector<float> g = copy_to_host_f32(m.parameter_grad("cross.0.q.weight"));
      CHECK(std::all_of(g.begin(), g.end(), [](float v) { return v == 0.0f; }));
    }
  }
  m.forward_outputs(b.batch(), {}, true);
  CHECK_THROWS_WITH(m.backward(1.0f), Catch::Contains("computes no loss; back-propagate a loss of your own"));
  m.forward_outputs(b.batch(), {}, true);
  std::vector<float> d(static_cast<size_t>(2 * 6 * c.d_model));
  CHECK_THROWS_WITH(m.backward_from(m.num_units() - 1, TensorView(d.data(), DType::f32, {2, 6, c.d_model})),
                    Catch::Contains("use backward()"));
  CHECK_THROWS_WITH(m.backward_from(1, TensorView(d.data(), DType::f32, {2, 5, c.d_model})),
                    Catch::Contains("d_output must be (B, T, C) = (2, 6, 16) f32"));
}

TEST_CASE("all-positions logits agree with the last-position logits and the loss", "[train][cpu]") {
  const ModelConfig c = tiny_config("gpt");
  Model m(c, cpu(), Precision::fp32, 2);
  RandomBatch rb(2, 7, c.vocab_size, 9);
  const std::vector<float> all = m.logits(rb.batch());  // (B, T, V)
  REQUIRE(all.size() == size_t(2 * 7 * c.vocab_size));
  const std::vector<float> last = m.last_logits(rb.batch().inputs);  // (B, V)
  const int64_t V = c.vocab_size;
  for (int64_t b = 0; b < 2; ++b)
    expect_bitwise("row " + std::to_string(b), std::vector<float>(all.begin() + (b * 7 + 6) * V, all.begin() + (b * 7 + 7) * V),
                   std::vector<float>(last.begin() + b * V, last.begin() + (b + 1) * V));
  double sum = 0;
  for (int64_t r = 0; r < 2 * 7; ++r) {
    const float* row = all.data() + r * V;
    double mx = row[0], z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
    sum += mx + std::log(z) - double(row[rb.targets[size_t(r)]]);
  }
  CHECK(std::fabs(sum / 14.0 - double(m.forward(rb.batch(), {}, false))) < 1e-5);
}

TEST_CASE("an encoder-decoder under full recompute trains bitwise as without", "[train][cpu]") {
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    INFO(precision_name(p));
    ModelConfig c = seq2seq_config("gpt", 1, 2);
    c.dropout_attention = c.dropout_residual = c.dropout_embedding = 0.1f;  // masks replayed from their keys
    Model plain(c, seq2seq_units(c, 1, 2), cpu(), p, 4);
    Model replay(c, seq2seq_units(c, 1, 2), cpu(), p, 4);
    replay.set_recompute(RecomputePolicy::every_block(c.n_layers));
    for (int step = 0; step < 2; ++step) {
      Seq2SeqBatch b(2, 6, c.vocab_size, uint64_t(10 + step));
      const StepKey key{1, step, 0};
      const float a = plain.forward(b.batch(), key, true), r = replay.forward(b.batch(), key, true);
      CHECK(std::memcmp(&a, &r, 4) == 0);
      plain.backward(1.0f);
      replay.backward(1.0f);
    }
    for (int u = 0; u < plain.num_units(); ++u)
      expect_bitwise("unit " + std::to_string(u) + " gradients", copy_to_host_f32(replay.unit_grads(u)),
                     copy_to_host_f32(plain.unit_grads(u)));
  }
}

}  // namespace strata::test
