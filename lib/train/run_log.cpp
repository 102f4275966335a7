// The JSONL run log and the divergence warning (see strata/run_log.h).
// Invariant: one JSON object per line, flushed after each, numbers written so they
// read back exactly (floats with 9 significant digits); a line that cannot be
// written whole is an error, never a silent gap.
#include "strata/run_log.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../io/json.h"
#include "../io/state_json.h"
#include "strata/error.h"

namespace strata {

namespace {
json::Value u64(size_t x) { return json::Value::unsigned_integer(uint64_t(x)); }

// JSON has no NaN or infinity, and a diverging run is exactly when they appear (a
// skipped step's gradient norm is inf): those are written as the strings "nan",
// "inf", "-inf", which Python's float() and gnuplot read back.
template <class T>
json::Value num(T x) {
  if (std::isfinite(x)) return json::Value::real(x);
  return json::Value::string(std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
}

// Growth of b over a, or 0 when a is too small to compare against (a unit whose
// statistic starts at zero is not "growing infinitely").
double growth(float a, float b) { return a > 1e-12f && std::isfinite(a) ? double(b) / double(a) : 0.0; }
}  // namespace

RunLog::RunLog(const std::string& path, const Model& model, const TrainOptions& options,
               const std::vector<std::pair<std::string, std::string>>& extra, double growth_factor)
    : path_(path), growth_factor_(growth_factor) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  file_ = std::fopen(path.c_str(), "a");
  STRATA_CHECK(file_, "RunLog: cannot open " << path << " for appending: " << std::strerror(errno));
  for (int u = 0; u < model.num_units(); ++u) unit_names_.push_back(model.unit_name(u));
  json::Value h = json::Value::object();
  h.set("type", json::Value::string("header"));
  h.set("model", io::to_json(model.config()));
  h.set("precision", json::Value::string(precision_name(model.precision())));
  h.set("parameters", json::Value::integer(model.num_parameters()));
  h.set("train", io::to_json(options));
  h.set("stats_every", json::Value::integer(options.stats_every));
  h.set("peak_flops", json::Value::real(options.peak_flops));
  h.set("growth_warning_factor", json::Value::real(growth_factor));
  json::Value names = json::Value::array();
  for (const std::string& n : unit_names_) names.push(json::Value::string(n));
  h.set("units", names);
  json::Value ex = json::Value::object();
  for (const auto& [k, v] : extra) ex.set(k, json::Value::string(v));
  h.set("run", ex);
  try {
    write_line(h.dump());
  } catch (...) {
    std::fclose(file_);
    throw;
  }
}

RunLog::~RunLog() {
  if (file_) std::fclose(file_);
}

void RunLog::write_line(const std::string& line) {
  // A log that silently stops (full disk) is worse than a stopped run: it is the
  // record the run is judged by.
  errno = 0;
  const bool ok = std::fputs(line.c_str(), file_) >= 0 && std::fputc('\n', file_) != EOF && std::fflush(file_) == 0;
  if (!ok || std::ferror(file_)) {
    const int err = errno;
    std::clearerr(file_);
    STRATA_FAIL("RunLog: cannot write to " << path_ << ": " << (err ? std::strerror(err) : "write error")
                                           << "; free space or give another --log");
  }
}

int64_t truncate_run_log(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return 0;
  std::string kept, line;
  int64_t removed = 0;
  while (std::getline(in, line)) {
    bool keep = false;
    try {
      const json::Value v = json::parse(line, path);
      const json::Value* s = v.find("step");
      keep = !s || !s->is_number() || s->as_int("step") <= step;
    } catch (const Error&) {
      keep = false;  // a line cut by a crash
    }
    if (keep) kept += line + "\n";
    else ++removed;
  }
  in.close();
  if (removed == 0) return 0;
  const std::string tmp = path + ".tmp";
  {
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    STRATA_CHECK(f, "RunLog: cannot write " << tmp << " to cut " << path << " back: " << std::strerror(errno));
    const bool ok = std::fwrite(kept.data(), 1, kept.size(), f) == kept.size() && std::fflush(f) == 0 &&
                    ::fsync(fileno(f)) == 0;
    const int err = errno;
    std::fclose(f);
    if (!ok) {
      std::remove(tmp.c_str());
      STRATA_FAIL("RunLog: cannot write " << tmp << " to cut " << path << " back: " << std::strerror(err));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  STRATA_CHECK(!ec, "RunLog: cannot replace " << path << ": " << ec.message());
  return removed;
}

std::vector<std::string> RunLog::record(const StepReport& r) {
  json::Value o = json::Value::object();
  o.set("type", json::Value::string("step"));
  o.set("step", json::Value::integer(r.step));
  o.set("loss", num(r.loss));
  o.set("lr", num(r.lr));
  o.set("grad_norm", num(r.grad_norm));
  o.set("skipped", json::Value::boolean(r.skipped));
  o.set("skipped_steps", json::Value::integer(r.skipped_steps));
  o.set("loss_scale", num(r.loss_scale));
  o.set("tokens", json::Value::integer(r.tokens));
  o.set("step_seconds", num(r.step_seconds));
  o.set("tokens_per_second", num(r.tokens_per_second));
  o.set("compute_seconds", num(r.compute_seconds));
  o.set("comm_seconds", num(r.comm_seconds));
  o.set("comm_wait_seconds", num(r.comm_wait_seconds));
  o.set("io_stall_seconds", num(r.io_stall_seconds));
  o.set("optimizer_seconds", num(r.optimizer_seconds));
  o.set("model_flops", num(r.model_flops));
  o.set("mfu", num(r.mfu));
  o.set("device_bytes", u64(r.device_bytes));
  o.set("pinned_bytes", u64(r.pinned_bytes));
  o.set("host_bytes", u64(r.host_bytes));
  o.set("nvme_bytes", u64(r.nvme_bytes));
  o.set("host_setup_peak_bytes", u64(r.host_setup_peak_bytes));
  o.set("nvme_read_gbps", num(r.nvme_read_gbps));
  o.set("nvme_write_gbps", num(r.nvme_write_gbps));
  o.set("norm_seconds", num(r.norm_seconds));
  o.set("update_seconds", num(r.update_seconds));
  o.set("update_read_gbps", num(r.update_read_gbps));
  o.set("update_write_gbps", num(r.update_write_gbps));
  o.set("frozen_bytes_saved", u64(r.frozen_bytes_saved));

  std::vector<std::string> warnings;
  if (!r.unit_stats.empty()) {
    json::Value units = json::Value::array();
    for (const UnitStats& u : r.unit_stats) {
      json::Value x = json::Value::object();
      x.set("unit", json::Value::integer(u.unit));
      x.set("act_rms", num(u.act_rms));
      x.set("act_max_abs", num(u.act_max_abs));
      x.set("grad_rms", num(u.grad_rms));
      units.push(std::move(x));
    }
    o.set("units", units);
    if (previous_.size() == r.unit_stats.size()) {
      for (size_t i = 0; i < r.unit_stats.size(); ++i) {
        const UnitStats &a = previous_[i], &b = r.unit_stats[i];
        const std::string name = size_t(b.unit) < unit_names_.size() ? unit_names_[size_t(b.unit)] : "?";
        const std::pair<const char*, std::pair<float, float>> checks[] = {
            {"activation RMS", {a.act_rms, b.act_rms}},
            {"activation max |x|", {a.act_max_abs, b.act_max_abs}},
            {"gradient RMS", {a.grad_rms, b.grad_rms}}};
        for (const auto& [what, v] : checks) {
          const double g = growth(v.first, v.second);
          if (g > growth_factor_ || (v.first > 0 && !std::isfinite(v.second))) {
            char buf[256];
            std::snprintf(buf, sizeof buf, "warning: step %lld: %s of %s grew %.1fx (%.4g -> %.4g) since the last "
                          "statistics step; the run may be diverging",
                          (long long)r.step, what, name.c_str(), g, double(v.first), double(v.second));
            warnings.emplace_back(buf);
          }
        }
      }
    }
    previous_ = r.unit_stats;
  }
  if (!warnings.empty()) {
    json::Value w = json::Value::array();
    for (const std::string& s : warnings) w.push(json::Value::string(s));
    o.set("warnings", w);
  }
  write_line(o.dump());
  return warnings;
}

void RunLog::record_eval(int64_t step, float loss) {
  json::Value o = json::Value::object();
  o.set("type", json::Value::string("eval"));
  o.set("step", json::Value::integer(step));
  o.set("val_loss", num(loss));
  write_line(o.dump());
}

std::string format_duration(double seconds) {
  char buf[32];
  const long s = std::isfinite(seconds) && seconds > 0 ? long(seconds + 0.5) : 0;
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

std::string progress_bar(int64_t done, int64_t total, double elapsed, int width) {
  const double f = total > 0 ? std::min(1.0, double(done) / double(total)) : 1.0;
  const int filled = int(f * width);  // full only when done
  std::string bar = "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "]";
  char buf[64];
  const double eta = done > 0 ? elapsed / double(done) * double(total - done) : 0.0;
  std::snprintf(buf, sizeof buf, " %3d%% ETA %s", int(f * 100), format_duration(eta).c_str());
  return bar + buf;
}

}  // namespace strata
