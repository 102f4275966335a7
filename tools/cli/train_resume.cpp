// Resume checks of `strata train` (see train_resume.h).
#include "train_resume.h"

#include <cstdio>
#include <map>

namespace cli {

namespace {

std::string real_text(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

const char* schedule_name(strata::ScheduleKind k) {
  switch (k) {
    case strata::ScheduleKind::constant: return "constant";
    case strata::ScheduleKind::cosine: return "cosine";
    case strata::ScheduleKind::wsd: return "wsd";
  }
  return "?";
}

// The model's shape: everything but dropout (which --allow-change dropout may change).
std::string shape_of(strata::ModelConfig c) {
  c.dropout_embedding = c.dropout_attention = c.dropout_residual = 0.0f;
  return strata::model_config_to_json(c);
}

std::string dropout_of(const strata::ModelConfig& c) {
  return "embedding " + real_text(c.dropout_embedding) + ", attention " + real_text(c.dropout_attention) +
         ", residual " + real_text(c.dropout_residual);
}

struct Setting {
  std::string name, saved, now;
};

// The settings a change of which would make the resumed run another run, in the
// order they are checked (--seq before the model, whose max_seq it may raise).
std::vector<Setting> settings(const strata::CheckpointInfo& saved, const RunSettings& now) {
  const strata::TrainOptions &a = saved.options, &b = now.train;
  const auto& extra = saved.progress.extra;
  auto recorded = [&](const char* key) {
    auto it = extra.find(key);
    return it == extra.end() ? std::string() : it->second;
  };
  std::vector<Setting> s;
  auto from_record = [&](const char* name, const std::string& value) {
    const std::string r = recorded(name);
    if (!r.empty()) s.push_back({name, r, value});  // older checkpoints did not record it
  };
  from_record("data", now.data);
  from_record("batch", std::to_string(now.batch));
  from_record("seq", std::to_string(now.seq));
  from_record("devices", std::to_string(now.devices));
  s.push_back({"accum", std::to_string(a.grad_accum), std::to_string(b.grad_accum)});
  s.push_back({"precision", strata::precision_name(saved.precision), strata::precision_name(now.precision)});
  s.push_back({"model", saved.config.describe(), now.config.describe()});
  if (shape_of(saved.config) == shape_of(now.config)) s.back().now = s.back().saved;
  s.push_back({"dropout", dropout_of(saved.config), dropout_of(now.config)});
  s.push_back({"seed", std::to_string(a.seed), std::to_string(b.seed)});
  s.push_back({"lr", real_text(a.adamw.lr), real_text(b.adamw.lr)});
  s.push_back({"beta1", real_text(a.adamw.beta1), real_text(b.adamw.beta1)});
  s.push_back({"beta2", real_text(a.adamw.beta2), real_text(b.adamw.beta2)});
  s.push_back({"eps", real_text(a.adamw.eps), real_text(b.adamw.eps)});
  s.push_back({"weight-decay", real_text(a.adamw.weight_decay), real_text(b.adamw.weight_decay)});
  s.push_back({"clip", real_text(a.clip_norm), real_text(b.clip_norm)});
  s.push_back({"schedule", schedule_name(a.schedule.kind), schedule_name(b.schedule.kind)});
  s.push_back({"warmup", std::to_string(a.schedule.warmup_steps), std::to_string(b.schedule.warmup_steps)});
  s.push_back({"min-lr-ratio", real_text(a.schedule.min_ratio), real_text(b.schedule.min_ratio)});
  s.push_back({"decay-steps", std::to_string(a.schedule.decay_steps), std::to_string(b.schedule.decay_steps)});
  return s;
}

// What a new --steps does to the schedule from the resumed step on.
std::string steps_consequence(const strata::CheckpointInfo& saved, const RunSettings& now) {
  const strata::LRSchedule &a = saved.options.schedule, &b = now.train.schedule;
  const int64_t k = saved.trainer.step;  // the next step, 0-based
  const double lr = saved.options.adamw.lr;
  char line[512];
  if (b.kind == strata::ScheduleKind::constant || a.factor(k) == b.factor(k)) {
    std::snprintf(line, sizeof line,
                  "--steps %lld (the checkpoint's run had %lld): applied; the learning rate at step %lld stays %.4g",
                  (long long)b.total_steps, (long long)a.total_steps, (long long)k + 1, lr * b.factor(k));
  } else {
    std::snprintf(line, sizeof line,
                  "--steps %lld (the checkpoint's run had %lld): applied; the %s schedule now ends at step %lld: "
                  "lr at step %lld changes from %.6g to %.6g",
                  (long long)b.total_steps, (long long)a.total_steps, schedule_name(b.kind), (long long)b.total_steps,
                  (long long)k + 1, lr * a.factor(k), lr * b.factor(k));
  }
  return line;
}

}  // namespace

const std::vector<std::string>& changeable_settings() {
  static const std::vector<std::string> names = {"data",   "batch", "seq",  "devices", "accum",        "precision",
                                                 "dropout", "seed", "lr",   "beta1",        "beta2",
                                                 "eps",    "weight-decay", "clip", "schedule", "warmup",
                                                 "min-lr-ratio", "decay-steps"};
  return names;
}

std::map<std::string, std::string> run_record(const RunSettings& run) {
  return {{"data", run.data}, {"batch", std::to_string(run.batch)}, {"seq", std::to_string(run.seq)},
          {"steps", std::to_string(run.train.schedule.total_steps)},
          {"devices", std::to_string(run.devices)}};
}

std::vector<std::string> check_resume(const strata::CheckpointInfo& saved, const RunSettings& now,
                                      const std::set<std::string>& allowed) {
  const std::string where = "resuming from " + saved.path + ": ";
  STRATA_CHECK(saved.has_trainer, where << "it holds weights only (no trainer state); start a new run with "
                                           "--init-from "
                                        << saved.path << " and another --out");
  std::vector<std::string> lines;
  for (const Setting& s : settings(saved, now)) {
    if (s.saved == s.now) continue;
    STRATA_CHECK(s.name != "model", where << "the checkpoint is another model (" << s.saved
                                          << ") than the flags describe (" << s.now
                                          << "); give the model flags it was trained with, or another --out");
    STRATA_CHECK(allowed.count(s.name),
                 where << "--" << s.name << " was " << s.saved << " in the checkpointed run and is now " << s.now
                       << "; that changes the run. Give the original value to resume exactly, or "
                          "--allow-change "
                       << s.name << " to go on with the new one");
    lines.push_back("--" + s.name + " changed from " + s.saved + " to " + s.now +
                    " (--allow-change): the resumed run is not the uninterrupted one");
  }
  if (saved.options.schedule.total_steps != now.train.schedule.total_steps)
    lines.push_back(steps_consequence(saved, now));
  return lines;
}

}  // namespace cli
