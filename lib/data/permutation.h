// A keyed pseudorandom permutation of [0, n): a balanced Feistel network over the
// smallest even number of bits covering n, with Philox as round function, and
// cycle-walking to stay inside [0, n). It orders the data loader's windows.
// Invariant: permute(i) is a pure function of (key, n, i) and a bijection of [0, n) for
// every key — ranks compute their disjoint shares of an epoch without talking.
#pragma once
#include <cstdint>

#include "kernels/common/philox.h"

namespace strata::detail {

class FeistelPermutation {
 public:
  static constexpr int kRounds = 6;  // >= 4 rounds of a PRF give a PRP (Luby-Rackoff)

  // n >= 1. key.key2 is taken over as the round number: give only seed and key1.
  FeistelPermutation(uint64_t n, num::RandomKey key) : n_(n), key_(key) {
    int bits = 2;
    while (bits < 64 && (uint64_t(1) << bits) < n) bits += 2;
    half_bits_ = bits / 2;
    half_mask_ = (uint64_t(1) << half_bits_) - 1;
  }

  uint64_t size() const { return n_; }

  // i in [0, n). The walk's expected length is < 4: the Feistel domain is < 4n.
  uint64_t operator()(uint64_t i) const {
    uint64_t x = encrypt(i);
    while (x >= n_) x = encrypt(x);
    return x;
  }

 private:
  uint64_t encrypt(uint64_t x) const {
    uint64_t left = x >> half_bits_, right = x & half_mask_;
    for (uint32_t round = 0; round < kRounds; ++round) {
      num::RandomKey k = key_;
      k.key2 = kSite | round;
      const uint64_t f = num::philox_word(k, right) & half_mask_;  // half_bits_ <= 32
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    return left << half_bits_ | right;
  }

  static constexpr uint32_t kSite = 0xDA7A0000u;  // data order; keeps apart from other uses
  uint64_t n_;
  num::RandomKey key_;
  int half_bits_ = 1;
  uint64_t half_mask_ = 1;
};

}  // namespace strata::detail
