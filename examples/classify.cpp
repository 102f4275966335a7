// Sequence classification with a bidirectional encoder and a CLS head: is a line of
// text from a software license or from a shell script? Both corpora are on every
// Debian system: the license texts of base-files (/usr/share/common-licenses/*) and
// the shell scripts in /usr/bin and /usr/sbin (files whose "#!" line names a shell).
// Each line becomes [CLS] + its bytes (padded), its label sits at targets[b, 0]
// (strata/unit.h, make_classifier_units), and the program prints the accuracy on
// held-out lines: every line whose hash falls in the last tenth, never trained on
// (docs/custom_units.md shows a run's output).
//   build/examples/classify                        # 600 steps, CLS pooling
//   build/examples/classify --pooling mean --steps 300
// The class of a held-out line is the argmax of p(k) = exp(-loss with label k): the
// head's loss is -log p of the label, so no logits interface is needed.
#include <strata/strata.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

constexpr int32_t kCls = 256, kPad = 257;  // after the 256 byte values
constexpr int64_t kVocab = 258;
const char* const kClassNames[] = {"license", "script"};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Lines of at least 20 bytes, outer whitespace trimmed.
void add_lines(const std::string& text, std::vector<std::string>& out) {
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    size_t b = at, e = end;
    while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
    if (e - b >= 20) out.push_back(text.substr(b, e - b));
    at = end + 1;
  }
}

std::vector<std::string> license_lines() {
  std::vector<std::string> lines;
  std::vector<std::filesystem::path> files;
  std::error_code ec;  // a missing directory leaves the class empty, which main reports
  for (const auto& e : std::filesystem::directory_iterator("/usr/share/common-licenses", ec))
    if (e.is_regular_file(ec)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) add_lines(read_file(f), lines);
  return lines;
}

std::vector<std::string> script_lines() {
  std::vector<std::string> lines;
  std::vector<std::filesystem::path> files;
  for (const char* dir : {"/usr/bin", "/usr/sbin"}) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.is_regular_file(ec) && !e.is_symlink(ec) && e.file_size(ec) < (1 << 20)) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::string text = read_file(f);
    const std::string first = text.substr(0, text.find('\n'));
    if (first.rfind("#!", 0) == 0 && (first.find("/sh") != std::string::npos || first.find("bash") != std::string::npos))
      add_lines(text, lines);
  }
  return lines;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

struct Split {
  std::vector<std::string> train[2], held[2];
};

// Distinct lines; one found in both corpora belongs to neither.
Split split(std::vector<std::string> license, std::vector<std::string> script) {
  std::set<std::string> a(license.begin(), license.end()), b(script.begin(), script.end());
  Split s;
  int k = 0;
  for (const std::set<std::string>* mine : {&a, &b}) {
    const std::set<std::string>& other = k == 0 ? b : a;
    for (const std::string& line : *mine)
      if (!other.count(line)) (fnv1a(line) % 10 == 9 ? s.held : s.train)[k].push_back(line);
    ++k;
  }
  return s;
}

// [CLS] + the line's first T-1 bytes, padded to T.
void encode(const std::string& line, int64_t T, std::vector<int32_t>& row) {
  row.push_back(kCls);
  for (int64_t i = 0; i + 1 < T; ++i)
    row.push_back(size_t(i) < line.size() ? int32_t(static_cast<unsigned char>(line[size_t(i)])) : kPad);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 600, batch = 32, T = 64;
  float lr = 2e-3f;
  std::string pooling = "cls";
  uint64_t seed = 1;
  CLI::App app("Trains a bidirectional encoder with a CLS head to tell license text from shell script lines.",
               "classify");
  app.add_option("--steps", steps, "optimizer steps")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch", batch, "lines per step")->capture_default_str()->check(CLI::Range(1, 1 << 12));
  app.add_option("--length", T, "tokens per line ([CLS] + bytes)")->capture_default_str()->check(CLI::Range(2, 512));
  app.add_option("--lr", lr, "AdamW learning rate")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--pooling", pooling, "cls | mean")->capture_default_str()->check(CLI::IsMember({"cls", "mean"}));
  app.add_option("--seed", seed, "initialisation and data order")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const Split data = split(license_lines(), script_lines());
    for (int k = 0; k < 2; ++k)
      if (data.train[k].size() < 100 || data.held[k].empty())
        throw strata::Error(std::string("classify: only ") + std::to_string(data.train[k].size()) + " " +
                            kClassNames[k] + " lines found; the task needs /usr/share/common-licenses and shell "
                                             "scripts in /usr/bin (any Debian system has both)");
    std::printf("lines: license %zu train / %zu held out, script %zu train / %zu held out\n", data.train[0].size(),
                data.held[0].size(), data.train[1].size(), data.held[1].size());

    strata::ModelConfig c;
    c.vocab_size = kVocab;
    c.n_layers = 2;
    c.n_heads = 4;
    c.d_model = 64;
    c.d_mlp = 256;
    c.max_seq = T;
    c.causal = false;  // the CLS position reads the whole line
    c.tied_embeddings = false;
    auto device = strata::Device::cpu();
    const strata::Pooling pool = pooling == "cls" ? strata::Pooling::cls : strata::Pooling::mean;
    strata::Model model(c, strata::make_classifier_units(c, 2, pool), *device, strata::Precision::fp32, seed);
    strata::TrainOptions to;
    to.adamw.lr = lr;
    to.schedule.kind = strata::ScheduleKind::cosine;
    to.schedule.warmup_steps = steps / 20;
    to.schedule.total_steps = steps;
    strata::Trainer trainer(model, to);
    std::printf("model: %s, %s pooling\n", c.describe().c_str(), strata::pooling_name(pool));

    // Balanced batches: each row's class is a fair coin, its line uniform in the class.
    std::mt19937_64 rng(seed);
    std::vector<int32_t> in, tg;
    double recent = 0;
    for (int64_t step = 0; step < steps; ++step) {
      in.clear();
      tg.assign(size_t(batch * T), -100);
      for (int64_t b = 0; b < batch; ++b) {
        const int k = int(rng() & 1);
        encode(data.train[k][rng() % data.train[k].size()], T, in);
        tg[size_t(b * T)] = k;
      }
      strata::Batch bt{strata::TensorView(in.data(), strata::DType::i32, {batch, T}, device.get()),
                       strata::TensorView(tg.data(), strata::DType::i32, {batch, T}, device.get())};
      recent += trainer.train_step({bt}).loss;
      if ((step + 1) % 100 == 0) {
        std::printf("step %lld  loss %.4f (mean of the last 100)\n", (long long)(step + 1), recent / 100.0);
        recent = 0;
      }
    }

    // Held-out lines one at a time: loss with label k is -log p(k).
    int64_t right[2] = {0, 0};
    std::vector<int32_t> label(size_t(T), -100);
    for (int k = 0; k < 2; ++k)
      for (const std::string& line : data.held[k]) {
        in.clear();
        encode(line, T, in);
        double loss[2];
        for (int guess = 0; guess < 2; ++guess) {
          label[0] = guess;
          loss[guess] = model.forward({strata::TensorView(in.data(), strata::DType::i32, {1, T}, device.get()),
                                       strata::TensorView(label.data(), strata::DType::i32, {1, T}, device.get())},
                                      {}, false);
        }
        right[k] += (loss[k] < loss[1 - k]);
      }
    const double acc0 = double(right[0]) / double(data.held[0].size());
    const double acc1 = double(right[1]) / double(data.held[1].size());
    const int64_t held = int64_t(data.held[0].size() + data.held[1].size());
    std::printf("held-out accuracy: %.1f%% (%lld / %lld); license %.1f%%, script %.1f%%\n",
                100.0 * double(right[0] + right[1]) / double(held), (long long)(right[0] + right[1]),
                (long long)held, 100.0 * acc0, 100.0 * acc1);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "classify: %s\n", e.what());
    return 1;
  }
}
