// An encoder-decoder with cross-attention, composed from the public units
// (strata/unit.h): a bidirectional encoder reads the source string (a named batch
// input, "source") and publishes its output as "memory"; the decoder (causal blocks,
// each followed by a cross-attention unit reading "memory") predicts the target. The
// task is generated here: reverse a string of k symbols. Trained with AdamW, then
// every held-out string (none seen in training) is decoded greedily, the whole output
// one token at a time, and scored by exact match (docs/custom_units.md shows a run).
//   build/examples/seq2seq                        # defaults: 600 steps of 64 strings of 8
//   build/examples/seq2seq --steps 1500 --length 12
// Source and target have one length (k + 1): the source is s then the separator 0,
// the decoder reads 0 then reverse(s) and predicts reverse(s) then 0.
#include <strata/strata.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace {

constexpr int32_t kSep = 0;

struct Task {
  int64_t k, vocab;
  // String `id`: k symbols from 1..vocab-1, from a splitmix64 stream of the id.
  std::vector<int32_t> string(uint64_t id) const {
    std::vector<int32_t> s;
    uint64_t z = id * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < k; ++i) {
      z ^= z >> 31;
      z *= 0xBF58476D1CE4E5B9ull;
      z ^= z >> 29;
      s.push_back(int32_t(1 + z % uint64_t(vocab - 1)));
    }
    return s;
  }
};

// Rows of (source, decoder input, target), each k + 1 long.
struct Rows {
  std::vector<int32_t> source, input, target;
  void add(const std::vector<int32_t>& s) {
    source.insert(source.end(), s.begin(), s.end());
    source.push_back(kSep);
    input.push_back(kSep);
    input.insert(input.end(), s.rbegin(), s.rend());
    target.insert(target.end(), s.rbegin(), s.rend());
    target.push_back(kSep);
  }
  strata::Batch batch(int64_t T, strata::Device* device) {
    const int64_t B = int64_t(source.size()) / T;
    strata::Batch b{strata::TensorView(input.data(), strata::DType::i32, {B, T}, device),
                    strata::TensorView(target.data(), strata::DType::i32, {B, T}, device)};
    b.extra.push_back({"source", strata::TensorView(source.data(), strata::DType::i32, {B, T}, device)});
    return b;
  }
};

// encoder.embedding (reads "source") -> enc bidirectional blocks (the last publishes
// "memory") -> embedding (the decoder's tokens) -> dec x (causal block, cross-attention
// over "memory") -> the LM head, tied to the decoder's embedding.
std::vector<std::unique_ptr<strata::Unit>> encoder_decoder(const strata::ModelConfig& c, int enc, int dec) {
  strata::ModelConfig bidirectional = c;
  bidirectional.causal = false;
  std::vector<std::unique_ptr<strata::Unit>> u;
  u.push_back(strata::make_wired_unit(strata::make_embedding_unit(c), {"encoder.embedding", "source", ""}));
  for (int l = 0; l < enc; ++l)
    u.push_back(strata::make_wired_unit(strata::make_block_unit(bidirectional, l),
                                        {"encoder.blocks." + std::to_string(l), "", l + 1 == enc ? "memory" : ""}));
  u.push_back(strata::make_embedding_unit(c));
  for (int l = 0; l < dec; ++l) {
    u.push_back(strata::make_block_unit(c, l));
    u.push_back(strata::make_cross_attention_unit(c, l, "memory"));
  }
  u.push_back(strata::make_head_unit(c));
  return u;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 600, batch = 64, k = 8, held_out = 512;
  int enc = 2, dec = 2;
  float lr = 3e-3f;
  CLI::App app("Trains an encoder-decoder with cross-attention to reverse strings; prints held-out exact match.",
               "seq2seq");
  app.add_option("--steps", steps, "optimizer steps")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch", batch, "strings per step")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--length", k, "symbols per string")->capture_default_str()->check(CLI::Range(1, 62));
  app.add_option("--encoder-layers", enc, "encoder blocks")->capture_default_str()->check(CLI::Range(1, 16));
  app.add_option("--decoder-layers", dec, "decoder layers")->capture_default_str()->check(CLI::Range(1, 16));
  app.add_option("--held-out", held_out, "held-out strings decoded")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--lr", lr, "AdamW learning rate")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  CLI11_PARSE(app, argc, argv);

  try {
    strata::ModelConfig c;
    c.vocab_size = 12;  // the separator and 11 symbols
    c.n_heads = 4;
    c.d_model = 64;
    c.d_mlp = 256;
    c.max_seq = k + 1;
    c.n_layers = enc + 1 + 2 * dec;  // every unit between the first and the last
    auto device = strata::Device::cpu();
    strata::Model model(c, encoder_decoder(c, enc, dec), *device, strata::Precision::fp32, 1);
    std::printf("%d units, %lld parameters\n", model.num_units(), (long long)model.num_parameters());
    strata::TrainOptions to;
    to.adamw.lr = lr;
    to.adamw.weight_decay = 0.0f;
    to.schedule.kind = strata::ScheduleKind::cosine;  // warm up, then decay: no late loss spikes
    to.schedule.warmup_steps = std::min<int64_t>(50, steps / 4);
    to.schedule.total_steps = steps;
    strata::Trainer trainer(model, to);

    const Task task{k, c.vocab_size};
    const int64_t T = k + 1;
    std::set<std::vector<int32_t>> seen;  // training strings, kept out of the held-out set
    for (int64_t step = 0; step < steps; ++step) {
      Rows rows;
      for (int64_t b = 0; b < batch; ++b) {  // ids below 2^40: training strings
        const std::vector<int32_t> s = task.string(uint64_t(step * batch + b));
        rows.add(s);
        seen.insert(s);
      }
      const strata::StepReport r = trainer.train_step({rows.batch(T, device.get())});
      if ((step + 1) % 100 == 0 || step == 0) std::printf("step %lld loss %.4f\n", (long long)(step + 1), r.loss);
    }

    // Held-out strings (ids from 2^40, none seen in training), decoded greedily: step t
    // writes the argmax at position t into the decoder's input at t + 1 (causal: the
    // logits at t see only positions <= t, so what lies beyond does not matter).
    Rows held;
    std::vector<std::vector<int32_t>> truth;
    for (uint64_t id = uint64_t(1) << 40; int64_t(truth.size()) < held_out; ++id) {
      std::vector<int32_t> s = task.string(id);
      if (seen.count(s)) continue;
      held.add(s);
      truth.push_back(s);
    }
    const int64_t B = int64_t(truth.size()), V = c.vocab_size;
    std::fill(held.input.begin(), held.input.end(), kSep);
    std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
    for (int64_t t = 0; t < k; ++t) {
      const std::vector<float> logits = model.logits(held.batch(T, device.get()));  // (B, T, V)
      for (int64_t b = 0; b < B; ++b) {
        const float* row = logits.data() + (b * T + t) * V;
        const int32_t next = int32_t(std::max_element(row, row + V) - row);
        out[size_t(b)].push_back(next);
        held.input[size_t(b * T + t + 1)] = next;
      }
    }
    int64_t exact = 0;
    for (int64_t b = 0; b < B; ++b)
      exact += std::equal(truth[size_t(b)].rbegin(), truth[size_t(b)].rend(), out[size_t(b)].begin());
    std::printf("held-out exact match: %lld / %lld = %.1f%%\n", (long long)exact, (long long)B,
                100.0 * double(exact) / double(B));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seq2seq: %s\n", e.what());
    return 1;
  }
}
