// Shared fixtures of the training tests: tiny configurations and token batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/philox.h"
#include "strata/model.h"
#include "support/host_tensor.h"

namespace strata::test {

// A small GPT-2-style ("gpt") or LLaMA-style ("llama") model, quick to train.
inline ModelConfig tiny_config(const std::string& arch) {
  ModelConfig c;
  c.vocab_size = 37;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_model = 16;
  c.d_mlp = 40;
  c.max_seq = 12;
  if (arch != "gpt") {  // "llama", and its grouped-query shapes below
    c.norm = NormKind::rmsnorm;
    c.mlp = MlpKind::swiglu;
    c.positions = PositionKind::rope;
    c.bias = false;
    c.tied_embeddings = false;
  }
  if (arch == "llama-gqa" || arch == "llama-mqa" || arch == "qwen2") c.n_heads = 4;
  if (arch == "llama-gqa" || arch == "qwen2") c.n_kv_heads = 2;
  if (arch == "llama-mqa") c.n_kv_heads = 1;
  if (arch == "qwen2") c.qkv_bias = true;
  if (arch == "llama-hd") c.n_heads = 4, c.n_kv_heads = 2, c.d_head = 6;  // q 24 wide on a width of 16
  if (arch == "llama-window") c.n_kv_heads = 1, c.sliding_window = 2;
  return c;
}

struct RandomBatch {
  int64_t B, T;
  std::vector<int32_t> inputs, targets;
  RandomBatch(int64_t b, int64_t t, int64_t vocab, uint64_t seed) : B(b), T(t) {
    num::RandomKey key{seed, 1, 2};
    for (int64_t i = 0; i < B * (T + 1); ++i) stream.push_back(int32_t(num::philox_word(key, uint64_t(i)) % vocab));
    for (int64_t b2 = 0; b2 < B; ++b2)
      for (int64_t j = 0; j < T; ++j) {
        inputs.push_back(stream[size_t(b2 * (T + 1) + j)]);
        targets.push_back(stream[size_t(b2 * (T + 1) + j + 1)]);
      }
  }
  Batch batch() {
    return Batch{TensorView(inputs.data(), DType::i32, {B, T}, &cpu()),
                 TensorView(targets.data(), DType::i32, {B, T}, &cpu())};
  }
  // Rows [r0, r1) as their own batch.
  RandomBatch rows(int64_t r0, int64_t r1) const {
    RandomBatch t = *this;
    t.B = r1 - r0;
    t.inputs.assign(inputs.begin() + r0 * T, inputs.begin() + r1 * T);
    t.targets.assign(targets.begin() + r0 * T, targets.begin() + r1 * T);
    return t;
  }
  std::vector<int32_t> stream;
};

}  // namespace strata::test
