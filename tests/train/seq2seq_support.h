// A small encoder-decoder built from the public units, for the side-input tests:
// "encoder.embedding" reads the batch input "source", `enc` bidirectional blocks (the
// last publishes "memory"), then the decoder: "embedding" (the batch's tokens), `dec`
// pairs of a causal block and a cross-attention unit reading "memory", the tied head.
#pragma once
#include <memory>
#include <vector>

#include "strata/unit.h"
#include "train_support.h"

namespace strata::test {

inline ModelConfig seq2seq_config(const std::string& arch, int enc = 1, int dec = 2) {
  ModelConfig c = tiny_config(arch);
  c.n_layers = enc + 1 + 2 * dec;  // every unit between the first and the last
  return c;
}

inline std::vector<std::unique_ptr<Unit>> seq2seq_units(const ModelConfig& c, int enc = 1, int dec = 2) {
  ModelConfig ec = c;
  ec.causal = false;
  std::vector<std::unique_ptr<Unit>> u;
  u.push_back(make_wired_unit(make_embedding_unit(c), {"encoder.embedding", "source", ""}));
  for (int l = 0; l < enc; ++l)
    u.push_back(make_wired_unit(make_block_unit(ec, l),
                                {"encoder.blocks." + std::to_string(l), "", l + 1 == enc ? "memory" : ""}));
  u.push_back(make_embedding_unit(c));
  for (int l = 0; l < dec; ++l) {
    u.push_back(make_block_unit(c, l));
    u.push_back(make_cross_attention_unit(c, l, "memory"));
  }
  u.push_back(make_head_unit(c));
  return u;
}

// Target-side tokens and targets with a source of the same shape.
struct Seq2SeqBatch {
  RandomBatch target, source;
  Seq2SeqBatch(int64_t B, int64_t T, int64_t vocab, uint64_t seed)
      : target(B, T, vocab, seed), source(B, T, vocab, seed + 7777) {}
  Batch batch(Device* device = &cpu()) {
    Batch b{TensorView(target.inputs.data(), DType::i32, {target.B, target.T}, device),
            TensorView(target.targets.data(), DType::i32, {target.B, target.T}, device)};
    b.extra.push_back({"source", TensorView(source.inputs.data(), DType::i32, {source.B, source.T}, device)});
    return b;
  }
  Seq2SeqBatch rows(int64_t r0, int64_t r1) const {
    Seq2SeqBatch s = *this;
    s.target = target.rows(r0, r1);
    s.source = source.rows(r0, r1);
    return s;
  }
};

}  // namespace strata::test
