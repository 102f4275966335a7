// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11), the counter-based generator behind every random number in strata.
// Invariant: a random value is a pure function of (key, counter). Nothing is stashed:
// to replay a dropout mask, call the same function with the same key and index.
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"
#include "strata/ops.h"

namespace strata::num {

struct Philox4 {
  uint32_t v[4];
};

STRATA_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

STRATA_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, ctr.v[0], hi0, lo0);
    philox_mulhilo(M1, ctr.v[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

// RandomKey (strata/ops.h): the stream a (seed, key1, key2) triple names. Element i draws
// word i % 4 of the block at counter (i / 4 as 64 bits, key1, key2), key = seed.

STRATA_HD Philox4 philox_block(const RandomKey& k, uint64_t block) {
  return philox4x32_10(Philox4{{uint32_t(block), uint32_t(block >> 32), k.key1, k.key2}},
                       uint32_t(k.seed), uint32_t(k.seed >> 32));
}

STRATA_HD uint32_t philox_word(const RandomKey& k, uint64_t index) {
  return philox_block(k, index >> 2).v[index & 3];
}

// Uniform in [0, 1) with 24 bits, exactly representable in float.
STRATA_HD float uniform_from_word(uint32_t w) { return float(w >> 8) * 5.9604644775390625e-8f; }

STRATA_HD float philox_uniform(const RandomKey& k, uint64_t index) {
  return uniform_from_word(philox_word(k, index));
}

// Standard normal by Box-Muller: element i uses words 2(i%2), 2(i%2)+1 of block i/2.
STRATA_HD float philox_normal(const RandomKey& k, uint64_t index) {
  Philox4 b = philox_block(k, index >> 1);
  int w = int(index & 1) * 2;
  float u1 = float((b.v[w] >> 8) + 1u) * 5.9604644775390625e-8f;  // (0, 1]
  float u2 = uniform_from_word(b.v[w + 1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

}  // namespace strata::num
