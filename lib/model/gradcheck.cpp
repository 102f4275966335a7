// check_unit_gradients: drives one trunk unit on its own (its parameters in one f32
// buffer laid out like the Model's, its input, scratch and workspace), and holds its
// backward to finite differences and to the unit contract (strata/unit.h). Also the
// finite-difference metric itself, shared with the op tests.
// Invariant: every comparison is with something the unit did not compute (the loss's
// differences, a second run, a prefilled buffer), and everything perturbed is restored.
#include "strata/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "strata/error.h"
#include "unit.h"

namespace strata {

GradientCheck GradientCheck::against(const std::vector<double>& analytic) const {
  STRATA_CHECK(analytic.size() == numeric.size(), "GradientCheck::against: " << analytic.size()
                                                      << " analytic values for a check of " << numeric.size());
  GradientCheck c;
  c.elements = elements;
  c.numeric = numeric;
  c.checked = int64_t(elements.size());
  double diff2 = 0, ref2 = 0;
  std::vector<std::pair<double, int64_t>> by_size;  // (|g_fd|, element)
  for (int64_t i : elements) {
    const double g = numeric[size_t(i)], a = analytic[size_t(i)];
    diff2 += (a - g) * (a - g);
    ref2 += g * g;
    by_size.emplace_back(std::fabs(g), i);
  }
  c.rel_error = ref2 > 0 ? std::sqrt(diff2 / ref2) : (diff2 > 0 ? INFINITY : 0.0);
  // The largest eighth (at least 4): their differences stand far above the noise.
  c.largest = std::min<int64_t>(c.checked, std::max<int64_t>(4, c.checked / 8));
  std::partial_sort(by_size.begin(), by_size.begin() + c.largest, by_size.end(),
                    [](const auto& x, const auto& y) { return x.first > y.first; });
  for (int64_t k = 0; k < c.largest; ++k) {
    const int64_t i = by_size[size_t(k)].second;
    const double g = numeric[size_t(i)], a = analytic[size_t(i)];
    if (g != 0 && !(a * g > 0) && c.bad_signs++ == 0) {
      c.first_bad = i;
      c.first_analytic = a;
      c.first_numeric = g;
    }
  }
  return c;
}

GradientCheck gradient_check(const std::vector<int64_t>& elements, const std::function<double(int64_t)>& get,
                             const std::function<void(int64_t, double)>& set, const std::function<double()>& loss,
                             const std::vector<double>& analytic, double eps) {
  GradientCheck c;
  c.elements = elements;
  c.numeric.assign(analytic.size(), 0.0);
  for (int64_t i : elements) {
    STRATA_CHECK(i >= 0 && size_t(i) < analytic.size(),
                 "gradient_check: element " << i << " outside the gradient's " << analytic.size() << " elements");
    const double orig = get(i);
    // Central difference over the steps the storage really took.
    auto central = [&](double h) {
      set(i, orig + h);
      const double h_up = get(i) - orig;
      const double up = loss();
      set(i, orig - h);
      const double h_down = orig - get(i);
      const double down = loss();
      set(i, orig);
      return (up - down) / (h_up + h_down);
    };
    // Richardson's combination of steps eps and 2 eps (the five-point stencil): the
    // eps^2 error cancels, so eps can be large enough that the loss's f32 rounding
    // stays far below the gradient.
    c.numeric[size_t(i)] = (4.0 * central(eps) - central(2.0 * eps)) / 3.0;
  }
  return c.against(analytic);
}

std::string UnitGradCheckReport::str() const {
  std::ostringstream s;
  for (const Tensor& t : tensors)
    s << t.name << ": ||g - g_fd|| = " << t.error << " of ||g_fd|| = " << t.reference << " (relative "
      << t.check.rel_error << ", noise floor " << t.noise_floor << ") over " << t.check.checked << " elements, "
      << t.check.bad_signs << " bad signs\n";
  for (const std::string& f : failures) s << "FAIL " << f << "\n";
  return s.str();
}

namespace {

// Deterministic values in [-1, 1) (Philox, keyed by seed and a stream number).
std::vector<float> uniform(uint64_t seed, uint32_t stream, int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  const num::RandomKey key{seed, 0x6c4ec4u, stream};
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * (2.0f * num::philox_uniform(key, i) - 1.0f);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// ||a - k b|| / ||k b||, 0 when both are zero.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b, double k) {
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = k * double(b[i]);
    d2 += (double(a[i]) - r) * (double(a[i]) - r);
    r2 += r * r;
  }
  return r2 > 0 ? std::sqrt(d2 / r2) : (d2 > 0 ? INFINITY : 0.0);
}

// The unit, its buffers and one forward / backward, all in f32.
class Harness {
 public:
  Harness(Unit& unit, const ModelConfig& config, Device& device, const UnitGradCheckOptions& o)
      : unit_(unit), config_(config), device_(device), o_(o), specs_(unit.param_specs()) {
    const int64_t C = config.d_model, n = o.B * o.T * C;
    for (const ParamSpec& s : specs_) {
      int64_t numel = 1;
      for (int64_t d : s.shape) numel *= d;
      offsets_.push_back(total_);
      numels_.push_back(s.shape.empty() ? 0 : numel);
      total_ += s.shape.empty() ? 0 : int64_t(carve_bytes(DType::f32, numel) / 4);
    }
    params_ = Buffer(device, size_t(std::max<int64_t>(total_, 16)) * 4, "gradcheck parameters");
    grads_ = Buffer(device, size_t(std::max<int64_t>(total_, 16)) * 4, "gradcheck gradients");
    for (const char* what : {"x", "y", "dy", "dx"}) stream_.emplace_back(device, size_t(n) * 4, what);
    for (size_t k = 0; k < unit.reads().size(); ++k) {  // side inputs and their gradients
      side_.emplace_back(device, size_t(n) * 4, "gradcheck side input");
      d_side_.emplace_back(device, size_t(n) * 4, "gradcheck side gradient");
    }
    scratch_ = Buffer(device, std::max<size_t>(64, unit.scratch_bytes(DType::f32, o.B * o.T)), "gradcheck scratch");
    transient_ = Buffer(device, std::max<size_t>(64, unit.transient_bytes(DType::f32, o.B, o.T)), "gradcheck transient");
    unit.reserve(device, DType::f32, o.B, o.T);

    // Spec inits, jittered: ones and zeros alone would make gradients symmetric.
    host_params_.assign(size_t(total_), 0.0f);
    for (size_t k = 0; k < specs_.size(); ++k) {
      const ParamSpec& s = specs_[k];
      const float jitter = s.init == ParamSpec::Init::normal ? std::max(s.std, 0.02f) : 0.1f;
      std::vector<float> v = uniform(o.seed, uint32_t(k + 16), numels_[k], jitter);
      for (int64_t i = 0; i < numels_[k]; ++i)
        host_params_[size_t(offsets_[k] + i)] = (s.init == ParamSpec::Init::ones ? 1.0f : 0.0f) + v[size_t(i)];
    }
    x_ = uniform(o.seed, 1, n, 1.0f);
    w_ = uniform(o.seed, 2, n, 1.0f);
    for (size_t k = 0; k < side_.size(); ++k) side_x_.push_back(uniform(o.seed, uint32_t(3 + k), n, 1.0f));
    upload_params();
    upload(view(0), x_);
    for (size_t k = 0; k < side_.size(); ++k) upload_side(k);
  }

  int64_t stream_numel() const { return o_.B * o_.T * config_.d_model; }
  TensorView view(int k) const {
    return TensorView(stream_[size_t(k)].data(), DType::f32, {o_.B, o_.T, config_.d_model}, &device_);
  }
  TensorView flat(const Buffer& b, int64_t n) const { return TensorView(b.data(), DType::f32, {n}, &device_); }
  // Synchronous: the host source may be a temporary, and CUDA copies are async.
  void upload(const TensorView& t, const std::vector<float>& v) {
    device_.stream().copy(t.data, v.data(), v.size() * 4);
    device_.stream().synchronize();
  }
  std::vector<float> download(const TensorView& t, int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    device_.stream().copy(v.data(), t.data, v.size() * 4);
    device_.stream().synchronize();
    return v;
  }
  void upload_params() {
    device_.stream().copy(params_.data(), host_params_.data(), host_params_.size() * 4);
    device_.stream().synchronize();
  }
  void upload_x() { upload(view(0), x_); }
  void upload_side(size_t k) { upload(side_view(side_[k]), side_x_[k]); }
  TensorView side_view(const Buffer& b) const {
    return TensorView(b.data(), DType::f32, {o_.B, o_.T, config_.d_model}, &device_);
  }

  UnitParams params(bool with_grads) const {
    UnitParams p;
    for (size_t k = 0; k < specs_.size(); ++k) {
      if (specs_[k].shape.empty()) {
        p.params.emplace_back();
        p.grads.emplace_back();
        continue;
      }
      TensorView t(static_cast<char*>(params_.data()) + offsets_[k] * 4, DType::f32, {1}, &device_);
      t.ndim = int(specs_[k].shape.size());
      for (int d = 0; d < t.ndim; ++d) t.shape[d] = specs_[k].shape[size_t(d)];
      TensorView g = t;
      g.data = static_cast<char*>(grads_.data()) + offsets_[k] * 4;
      p.params.push_back(t);
      p.grads.push_back(with_grads ? g : TensorView{});
    }
    return p;
  }

  UnitContext context() { return UnitContext{device_.stream(), config_, DType::f32, 1, o_.B, o_.T, StepKey{o_.seed, 3, 1}, o_.train}; }

  std::vector<float> forward() {
    UnitContext ctx = context();
    UnitIO io;
    io.x = view(0);
    io.y = view(1);
    io.transient = transient_.data();
    for (const Buffer& b : side_) io.side.push_back(side_view(b));
    unit_.forward(ctx, params(false), io);
    return download(view(1), stream_numel());
  }
  // L = sum(y * w) in double.
  double loss() {
    const std::vector<float> y = forward();
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += double(y[i]) * double(w_[i]);
    return l;
  }
  // Backward of the last forward with dy = w and dx prefilled with `fill`; returns dx.
  std::vector<float> backward(float fill) {
    upload(view(2), w_);
    upload(view(3), std::vector<float>(size_t(stream_numel()), fill));
    UnitContext ctx = context();
    UnitIO io;
    io.x = view(0);
    io.y = view(1);
    io.dy = view(2);
    io.dx = view(3);
    io.transient = transient_.data();
    for (const Buffer& b : side_) io.side.push_back(side_view(b));
    for (const Buffer& b : d_side_) io.d_side.push_back(side_view(b));  // accumulate, like the grads
    unit_.backward(ctx, params(true), io, scratch_.data());
    return download(view(3), stream_numel());
  }
  void zero_grads() {
    ops::fill_zero(flat(grads_, std::max<int64_t>(total_, 16)), device_.stream());
    for (const Buffer& b : d_side_) ops::fill_zero(side_view(b), device_.stream());
  }
  std::vector<float> side_grads(size_t k) { return download(side_view(d_side_[k]), stream_numel()); }
  size_t sides() const { return side_.size(); }
  std::vector<float>& side_x(size_t k) { return side_x_[k]; }
  std::vector<float> grads() { return download(flat(grads_, std::max<int64_t>(total_, 1)), std::max<int64_t>(total_, 1)); }

  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t offset(size_t k) const { return offsets_[k]; }
  int64_t numel(size_t k) const { return numels_[k]; }
  std::vector<float>& host_params() { return host_params_; }
  std::vector<float>& x() { return x_; }
  const std::vector<float>& w() const { return w_; }

 private:
  Unit& unit_;
  const ModelConfig& config_;
  Device& device_;
  UnitGradCheckOptions o_;
  std::vector<ParamSpec> specs_;
  std::vector<int64_t> offsets_, numels_;
  int64_t total_ = 0;
  Buffer params_, grads_, scratch_, transient_;
  std::vector<Buffer> stream_;  // x, y, dy, dx: (B, T, C) f32
  std::vector<Buffer> side_, d_side_;  // per Unit::reads() name: (B, T, C) f32
  std::vector<std::vector<float>> side_x_;
  std::vector<float> host_params_, x_, w_;
};

std::vector<int64_t> spread(int64_t n, int64_t samples) {
  const int64_t count = samples > 0 ? std::min(samples, n) : n;
  std::vector<int64_t> e;
  for (int64_t k = 0; k < count; ++k) e.push_back(count == n ? k : k * n / count);
  return e;
}

}  // namespace

UnitGradCheckReport check_unit_gradients(Unit& unit, const ModelConfig& config, Device& device,
                                         const UnitGradCheckOptions& o) {
  STRATA_CHECK(o.B >= 1 && o.T >= 1 && o.T <= config.max_seq,
               "check_unit_gradients: batch (" << o.B << ", " << o.T << ") must be positive with T <= max_seq "
                                               << config.max_seq);
  STRATA_CHECK(o.eps > 0 && o.tolerance > 0, "check_unit_gradients: eps " << o.eps << " and tolerance "
                                                                            << o.tolerance << " must be positive");
  STRATA_CHECK(unit.borrowed().empty(), "check_unit_gradients: unit '" << unit.name() << "' borrows "
                                            << unit.borrowed().front()
                                            << "; check a unit that owns all its parameters");
  UnitGradCheckReport r;
  Harness h(unit, config, device, o);
  auto fail = [&](const std::string& what) { r.failures.push_back(unit.name() + ": " + what); };

  // The contract, watched from outside.
  device.stream().synchronize();
  const size_t live = device.arena().bytes_live();
  device.arena().reset_high_water();
  h.zero_grads();
  const std::vector<float> y1 = h.forward();
  const std::vector<float> dx1 = h.backward(0.0f);
  const std::vector<float> g1 = h.grads();
  std::vector<std::vector<float>> s1;
  for (size_t k = 0; k < h.sides(); ++k) s1.push_back(h.side_grads(k));
  if (device.arena().bytes_high_water() > live || device.arena().bytes_live() != live)
    fail("forward or backward allocated from the device arena (" +
         std::to_string(device.arena().bytes_high_water() - live) +
         " bytes at peak); size every buffer in reserve(), scratch_bytes() or transient_bytes()");
  const std::vector<float> y2 = h.forward();
  if (!same_bits(y1, y2)) fail("forward replayed with the same key gave different bits; recompute needs them equal");
  const std::vector<float> dx2 = h.backward(12345.0f);
  const std::vector<float> g2 = h.grads();
  for (size_t k = 0; k < h.sides(); ++k) {
    const double side_acc = rel_diff(h.side_grads(k), s1[k], 2.0);
    if (!(side_acc <= 1e-5))
      fail("a second backward did not double the gradient of side input '" + unit.reads()[k] +
           "' (||d2 - 2 d1|| / ||2 d1|| = " + std::to_string(side_acc) + "): side gradients accumulate (+=)");
  }
  if (!same_bits(dx1, dx2))
    fail("dx depends on what dx held before backward (prefilled 0 vs 12345): activation gradients are assigned (=)");
  const double acc = rel_diff(g2, g1, 2.0);
  if (!(acc <= 1e-5))
    fail("a second backward did not double the parameter gradients (||g2 - 2 g1|| / ||2 g1|| = " +
         std::to_string(acc) + "): parameter gradients accumulate (+=)");

  // Finite differences of L = sum(y * w), for x and for every parameter tensor. y is
  // stored in f32, so L carries rounding noise of rms sqrt(sum (w ulp(y))^2 / 12); the
  // five-point difference turns it into about 1.5 noise / eps per element. A residual
  // unit's y is mostly its input, so this floor, not the tolerance, bounds what a small
  // gradient (a norm's) can be held to.
  double noise2 = 0;
  for (size_t i = 0; i < y1.size(); ++i) {
    const float m = std::fabs(y1[i]);
    const double ulp = double(std::nextafter(m, INFINITY) - m);
    noise2 += double(h.w()[i]) * double(h.w()[i]) * ulp * ulp / 12.0;
  }
  const double fd_noise = 1.5 * std::sqrt(noise2) / o.eps;
  auto check = [&](const std::string& name, std::vector<float>& host, int64_t offset, int64_t n,
                   const std::vector<float>& analytic, const std::function<void()>& push) {
    std::vector<double> a(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) a[size_t(i)] = analytic[size_t(offset + i)];
    GradientCheck c = gradient_check(
        spread(n, o.samples), [&](int64_t i) { return double(host[size_t(offset + i)]); },
        [&](int64_t i, double v) {
          host[size_t(offset + i)] = float(v);
          push();
        },
        [&] { return h.loss(); }, a, o.eps);
    double diff2 = 0, ref2 = 0;
    for (int64_t i : c.elements) {
      const double d = a[size_t(i)] - c.numeric[size_t(i)];
      diff2 += d * d;
      ref2 += c.numeric[size_t(i)] * c.numeric[size_t(i)];
    }
    const double floor = 3.0 * fd_noise * std::sqrt(double(c.elements.size()));
    if (c.bad_signs > 0 || std::sqrt(diff2) > o.tolerance * std::sqrt(ref2) + floor) {
      std::ostringstream s;
      s << "gradient of " << name << " disagrees with finite differences: ||g - g_fd|| / ||g_fd|| = " << c.rel_error
        << " (tolerance " << o.tolerance << ", plus the f32 noise floor " << floor << " on ||g - g_fd|| = "
        << std::sqrt(diff2) << ")";
      if (c.bad_signs)
        s << ", " << c.bad_signs << " large components zero or of the wrong sign (element " << c.first_bad
          << ": analytic " << c.first_analytic << ", finite difference " << c.first_numeric << ")";
      fail(s.str());
    }
    r.tensors.push_back({name, std::move(c), std::sqrt(diff2), std::sqrt(ref2), floor});
  };
  check("x", h.x(), 0, int64_t(h.x().size()), dx1, [&] { h.upload_x(); });
  for (size_t k = 0; k < h.sides(); ++k)
    check(unit.reads()[k], h.side_x(k), 0, int64_t(h.side_x(k).size()), s1[k], [&, k] { h.upload_side(k); });
  for (size_t k = 0; k < h.specs().size(); ++k)
    if (h.numel(k) > 0) check(h.specs()[k].name, h.host_params(), h.offset(k), h.numel(k), g1, [&] { h.upload_params(); });
  return r;
}

}  // namespace strata
