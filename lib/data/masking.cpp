// BERT-style masking for masked-LM training (strata/data.h: mask_tokens).
// Invariant: no RNG state: every draw is Philox keyed by (seed, batch number) at the
// element's own block, so the result never depends on which batches came before.
#include "kernels/common/philox.h"
#include "strata/data.h"
#include "strata/error.h"

namespace strata {

namespace {
constexpr uint32_t kMaskStream = 0x6d6c6d31;  // "mlm1": keeps these draws apart from others of the seed
}

MaskedBatch mask_tokens(const TensorView& tokens, const MaskOptions& o, int64_t number) {
  STRATA_CHECK(tokens.data && tokens.dtype == DType::i32 && tokens.ndim == 2,
               "mask_tokens: tokens must be (B, T) i32 in host memory, got "
                   << (tokens.ndim ? tokens.str() : std::string("undefined")));
  STRATA_CHECK(o.vocab_size > 0, "mask_tokens: vocab_size = " << o.vocab_size << "; set it to the model's vocab_size");
  STRATA_CHECK(o.mask_token >= 0 && o.mask_token < o.vocab_size,
               "mask_tokens: mask_token " << o.mask_token << " is outside the vocabulary [0, " << o.vocab_size
                                          << "); reserve an id for [MASK]");
  STRATA_CHECK(o.probability >= 0 && o.probability <= 1,
               "mask_tokens: probability " << o.probability << " is not in [0, 1] (BERT uses 0.15)");
  const int32_t* in = tokens.ptr<int32_t>();
  const int64_t n = tokens.numel();
  for (int64_t i = 0; i < n; ++i)
    STRATA_CHECK(in[i] >= 0 && in[i] < o.vocab_size, "mask_tokens: token " << in[i] << " at element " << i
                                                                            << " is outside the vocabulary [0, "
                                                                            << o.vocab_size << ")");
  MaskedBatch m;
  m.batch_size = tokens.shape[0];
  m.seq_len = tokens.shape[1];
  m.inputs.assign(in, in + n);
  m.targets.assign(size_t(n), -100);
  const num::RandomKey key{o.seed, uint32_t(uint64_t(number)), kMaskStream ^ uint32_t(uint64_t(number) >> 32)};
  for (int64_t i = 0; i < n; ++i) {
    const num::Philox4 r = num::philox_block(key, uint64_t(i));  // words: chosen, kind, replacement
    if (double(num::uniform_from_word(r.v[0])) >= o.probability) continue;
    m.targets[size_t(i)] = in[i];
    const float kind = num::uniform_from_word(r.v[1]);
    if (kind < 0.8f)
      m.inputs[size_t(i)] = o.mask_token;
    else if (kind < 0.9f)
      m.inputs[size_t(i)] = int32_t(r.v[2] % uint32_t(o.vocab_size));
  }
  return m;
}

}  // namespace strata
