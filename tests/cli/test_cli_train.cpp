// `strata train` as a user lives with it, driven through the built binary on a
// tiny byte-level model: Ctrl-C stops after the current step with a checkpoint and
// status 130, and the resumed run is the uninterrupted one step for step; a changed
// setting is refused by name unless allowed; a run killed after its last checkpoint
// leaves a log that the resume cuts back; log write errors and unwritable outputs
// fail before training; a closed stdout pipe does not stop the run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>

#include "cli/cli_support.h"

using namespace strata::test;
using Catch::Contains;

namespace {

// Shards of a small deterministic text, and the flags of a tiny quick model.
struct TinyRun {
  Cli cli;
  std::string data;
  TinyRun() : data(cli.prepare_corpus(3000)) { REQUIRE(!data.empty()); }
  std::vector<std::string> train(const std::string& out, std::vector<std::string> more) const {
    std::vector<std::string> a = {"train", "--data", data, "--out", out, "--n-layers", "1", "--n-heads", "2",
                                  "--d-model", "32", "--d-mlp", "64", "--seq", "16", "--batch", "4", "--threads", "1",
                                  "--no-progress", "--schedule", "constant", "--warmup", "0", "--stats-every", "0"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
};

std::string loss_at(const std::vector<std::pair<int, std::string>>& v, int step) {
  for (const auto& [s, l] : v)
    if (s == step) return l;
  return "";
}

std::vector<std::string> log_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> v;
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

}  // namespace

TEST_CASE("cli train: SIGINT mid-run saves the current step and exits 130; the resume is exact", "[cli]") {
  TinyRun t;
  const std::string out = t.cli.file("run");
  const CliResult a = t.cli.run(t.train(out, {"--steps", "1000000", "--save-every", "0"}), "step 3/", {SIGINT});
  INFO(a.out << a.err);
  REQUIRE(a.status == 130);
  CHECK_THAT(a.err, Contains("SIGINT: stopping after step"));
  const auto losses = step_losses(a.out);
  REQUIRE(losses.size() >= 3);
  const int stopped = losses.back().first;
  CHECK_THAT(a.err, Contains("stopped at step " + std::to_string(stopped) + " of 1000000, checkpoint " + out +
                             "/" + checkpoint_name(stopped)));
  REQUIRE(std::filesystem::exists(out + "/" + checkpoint_name(stopped)));

  // Resume with a shorter --steps (constant schedule: exact, said so), against an
  // uninterrupted run of that length.
  const std::string end = std::to_string(stopped + 3);
  const CliResult b = t.cli.run(t.train(out, {"--steps", end, "--save-every", "0"}));
  INFO(b.out << b.err);
  REQUIRE(b.status == 0);
  CHECK_THAT(b.out, Contains("resuming from " + out + "/" + checkpoint_name(stopped)));
  CHECK_THAT(b.out, Contains("--steps " + end + " (the checkpoint's run had 1000000): applied; the learning rate at "
                             "step " + std::to_string(stopped + 1) + " stays"));
  const CliResult ref = t.cli.run(t.train(t.cli.file("ref"), {"--steps", end, "--save-every", "0"}));
  REQUIRE(ref.status == 0);
  const auto resumed = step_losses(b.out), whole = step_losses(ref.out);
  REQUIRE(resumed.size() == 3);
  for (int s = 1; s <= stopped + 3; ++s) {
    const std::string l = loss_at(s <= stopped ? losses : resumed, s);
    CHECK(l == loss_at(whole, s));
  }
}

TEST_CASE("cli train: a second signal stops at once", "[cli]") {
  TinyRun t;
  const std::string out = t.cli.file("run");
  // Steps long enough (a wider model, 64 x 64 tokens) that the second SIGTERM, 50 ms
  // after the first, lands before the step the first one waits for has finished.
  const CliResult a = t.cli.run(t.train(out, {"--steps", "1000000", "--save-every", "0", "--n-layers", "4",
                                              "--d-model", "128", "--d-mlp", "512", "--seq", "64", "--batch", "64"}),
                                "step 1/", {SIGTERM, SIGTERM}, 50);
  INFO(a.out << a.err);
  CHECK(a.signaled);
  CHECK(a.status == 128 + SIGTERM);
  CHECK_THAT(a.err, !Contains("saving a checkpoint"));
}

TEST_CASE("cli train: a changed setting is refused by name, unless --allow-change", "[cli]") {
  TinyRun t;
  const std::string out = t.cli.file("run");
  REQUIRE(t.cli.run(t.train(out, {"--steps", "4"})).status == 0);
  struct Change {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Change> changes = {
      {{"--precision", "bf16"}, "--precision was fp32 in the checkpointed run and is now bf16"},
      {{"--lr", "0.001"}, "--lr was 0.00200000009 in the checkpointed run and is now 0.00100000005"},
      {{"--seq", "32"}, "--seq was 16 in the checkpointed run and is now 32"},
      {{"--batch", "8"}, "--batch was 4 in the checkpointed run and is now 8"},
      {{"--seed", "7"}, "--seed was 1337 in the checkpointed run and is now 7"},
      {{"--schedule", "cosine"}, "--schedule was constant in the checkpointed run and is now cosine"},
      {{"--d-model", "64"}, "the checkpoint is another model"},
  };
  for (const Change& c : changes) {
    std::vector<std::string> flags = {"--steps", "8"};
    flags.insert(flags.end(), c.flags.begin(), c.flags.end());
    const CliResult r = t.cli.run(t.train(out, flags));
    INFO(c.flags[0]);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains(c.message));
    CHECK_FALSE(std::filesystem::exists(out + "/" + checkpoint_name(8)));
  }
  const CliResult allowed = t.cli.run(t.train(out, {"--steps", "6", "--precision", "bf16", "--allow-change", "precision"}));
  INFO(allowed.err);
  CHECK(allowed.status == 0);
  CHECK_THAT(allowed.out, Contains("--precision changed from fp32 to bf16 (--allow-change)"));
  CHECK(std::filesystem::exists(out + "/" + checkpoint_name(6)));
}

TEST_CASE("cli train: a resume cuts the log back to the checkpoint's step", "[cli]") {
  TinyRun t;
  const std::string out = t.cli.file("run");
  // Killed (no handler runs) after the step-3 checkpoint, at step 5 or later.
  const CliResult a = t.cli.run(t.train(out, {"--steps", "1000000", "--save-every", "3"}), "step 5/", {SIGKILL});
  REQUIRE(a.status == 128 + SIGKILL);
  const std::string ck = [&] {
    std::string last;
    for (const auto& e : std::filesystem::directory_iterator(out))
      if (e.path().filename().string().rfind("step_", 0) == 0) last = std::max(last, e.path().filename().string());
    return last;
  }();
  const int saved = std::stoi(ck.substr(5));
  auto logged_steps = [&] {
    std::vector<int> steps;
    for (const std::string& l : log_lines(out + "/log.jsonl"))
      if (l.find("\"type\":\"step\"") != std::string::npos)
        steps.push_back(std::stoi(l.substr(l.find("\"step\":") + 7)));
    return steps;
  };
  const std::vector<int> before = logged_steps();
  REQUIRE(before.size() >= 5);
  const auto after_checkpoint = std::count_if(before.begin(), before.end(), [&](int s) { return s > saved; });
  const CliResult b = t.cli.run(t.train(out, {"--steps", std::to_string(saved + 4), "--save-every", "3"}));
  INFO(b.out << b.err);
  REQUIRE(b.status == 0);
  if (after_checkpoint > 0)  // (none when the kill landed right after a save)
    CHECK_THAT(b.out, Contains("log: cut " + out + "/log.jsonl back to step " + std::to_string(saved) + " (" +
                               std::to_string(after_checkpoint) + " records of an interrupted run removed)"));
  // Every step once, in order: the plot shows one run.
  const std::vector<int> steps = logged_steps();
  std::vector<int> expected;
  for (int s = 1; s <= saved + 4; ++s) expected.push_back(s);
  CHECK(steps == expected);
}

TEST_CASE("cli train: output paths and log writes fail before or as they happen, never silently", "[cli]") {
  TinyRun t;
  const CliResult full = t.cli.run(t.train(t.cli.file("run"), {"--steps", "3", "--log", "/dev/full"}));
  CHECK(full.status == 1);
  CHECK_THAT(full.err, Contains("RunLog: cannot write to /dev/full: No space left on device"));
  CHECK_FALSE(std::filesystem::exists(t.cli.file("run/" + checkpoint_name(3))));
  const CliResult bad_out = t.cli.run(t.train("/proc/strata-run", {"--steps", "3"}));
  CHECK(bad_out.status == 1);
  CHECK_THAT(bad_out.err, Contains("--out /proc/strata-run: cannot create the directory"));
  const CliResult bad_log = t.cli.run(t.train(t.cli.file("run2"), {"--steps", "3", "--log", "/proc/x/log.jsonl"}));
  CHECK(bad_log.status == 1);
  CHECK_THAT(bad_log.err, Contains("--log /proc/x/log.jsonl: cannot append to it"));
}

TEST_CASE("cli train: --init-from creates --out; a warmup past the run is warned about", "[cli]") {
  TinyRun t;
  REQUIRE(t.cli.run(t.train(t.cli.file("base"), {"--steps", "2"})).status == 0);
  const CliResult r = t.cli.run(t.train(t.cli.file("new/nested"), {"--steps", "2", "--init-from", t.cli.file("base"),
                                                                     "--schedule", "cosine", "--warmup", "5"}));
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Contains("initial weights from strata checkpoint " + t.cli.file("base") + "/" + checkpoint_name(2)));
  CHECK_THAT(r.err, Contains("warning: --warmup 5 is not shorter than --steps 2"));
  CHECK(std::filesystem::exists(t.cli.file("new/nested/" + checkpoint_name(2))));
}

TEST_CASE("cli train: a reader that closes the pipe does not stop the run", "[cli]") {
  TinyRun t;
  std::string line = "set -o pipefail; \"$STRATA\"";
  for (const std::string& a : t.train(t.cli.file("run"), {"--steps", "40", "--save-every", "0"})) line += " " + a;
  CHECK(t.cli.shell(line + " | head -n 1 > /dev/null") == 0);
  CHECK(std::filesystem::exists(t.cli.file("run/" + checkpoint_name(40))));
}

TEST_CASE("cli train: every model-config key of a --config file reaches the model; unknown keys are refused",
          "[cli]") {
  TinyRun t;
  const std::string cfg = t.cli.file("model.cfg"), out = t.cli.file("run");
  const std::string text =
      "# a Qwen2-like shape: GQA, its own head width, a window, q/k/v bias, llama3 RoPE\n"
      "n-layers = 1\nn-heads = 4\nn-kv-heads = 2\nd-head = 12\nd-model = 32\nd-mlp = 48\nsliding-window = 5\n"
      "norm = rmsnorm\nmlp = swiglu\npositions = rope\nbias = false\nqkv-bias = true\ntied-embeddings = false\n"
      "norm-eps = 1e-6\nrope-theta = 500\nrope-scaling = llama3\nrope-factor = 8\nrope-original-max-seq = 64\n"
      "dropout = 0\ndropout-embedding = 0.05\ncausal = true\n";
  write_bytes(cfg, text.data(), text.size());
  const std::vector<std::string> args = {"train", "--config", cfg, "--data", t.data, "--out", out, "--seq", "16",
                                         "--batch", "2", "--steps", "1", "--threads", "1", "--no-progress",
                                         "--stats-every", "0"};
  const CliResult r = t.cli.run(args);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Contains("1 layers, width 32, 4 heads (2 kv) of width 12, window 5, mlp 48"));
  CHECK_THAT(r.out, Contains("RMSNorm, SwiGLU, RoPE (llama3 scaling)"));
  const std::string config = read_file(out + "/" + checkpoint_name(1) + "/config.json");
  for (const char* want : {"\"n_kv_heads\": 2", "\"d_head\": 12", "\"sliding_window\": 5", "\"qkv_bias\": true",
                           "\"tied_embeddings\": false", "\"rope_theta\": 500", "\"kind\": \"llama3\"",
                           "\"original_max_seq\": 64", "\"dropout_embedding\": 0.0500000007"})
    CHECK_THAT(config, Contains(want));
  // Unknown names and inconsistent values are refused by name before anything is made.
  const std::string bad = t.cli.file("bad.cfg");
  for (const auto& [line, message] : std::vector<std::pair<std::string, std::string>>{
           {"head-dim = 8\n", ":1: unknown option 'head-dim'"},
           {"n-kv-heads = 3\n", "n_kv_heads 3 must divide n_heads 4"},
           {"sliding-window = 4\ncausal = false\n", "sliding_window 4 needs causal attention"},
           {"rope-factor = 2\n", "need --rope-scaling linear or llama3"},
           {"qkv-bias = yes\n", "--qkv-bias: 'yes' is not one of true | false"}}) {
    write_bytes(bad, line.data(), line.size());
    const std::string out2 = t.cli.file("bad_run");
    const CliResult b = t.cli.run({"train", "--config", bad, "--n-heads", "4", "--data", t.data, "--out", out2});
    INFO(line);
    CHECK(b.status != 0);
    CHECK_THAT(b.err, Contains(message));
    CHECK_FALSE(std::filesystem::exists(out2));
  }
}
