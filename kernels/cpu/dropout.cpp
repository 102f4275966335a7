// CPU dropout, forward and backward (the same masked scaling).
// Invariant: the mask is a pure function of (key, element index) —
// keep(i) = num::philox_uniform(key, i) >= p — identical to the CUDA backend and
// to attention's dropout; nothing is stored, backward regenerates it.
#include <cstring>

#include "../common/philox.h"
#include "cpu.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

// Philox blocks per tile: 4 elements each, generated together so the 10 rounds
// run over a tile of independent counters.
constexpr int64_t kTileBlocks = 16;
constexpr int64_t kTileElems = 4 * kTileBlocks;

template <class T>
void dropout_impl(const ops::DropoutArgs& a) {
  const int64_t n = a.inp.numel();
  const T* inp = a.inp.ptr<T>();
  T* out = a.out.ptr<T>();
  if (a.p == 0.0f) {  // every element kept with scale 1
    if (a.inp.data != a.out.data)
      parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
        std::memcpy(out + begin, inp + begin, size_t(end - begin) * sizeof(T));
      });
    return;
  }
  const float p = a.p, scale = 1.0f / (1.0f - a.p);
  const num::RandomKey key = a.key;
  const int64_t tiles = (n + kTileElems - 1) / kTileElems;
  parallel_for(tiles, 256, [&](int64_t begin, int64_t end) {
    uint32_t words[kTileElems];  // word j is element (tile * kTileElems + j)'s
    for (int64_t tile = begin; tile < end; ++tile) {
      const uint64_t block0 = uint64_t(tile) * kTileBlocks;
      for (int64_t j = 0; j < kTileBlocks; ++j) {
        const num::Philox4 r = num::philox_block(key, block0 + uint64_t(j));
        for (int w = 0; w < 4; ++w) words[4 * j + w] = r.v[w];
      }
      const int64_t i0 = tile * kTileElems, count = std::min(kTileElems, n - i0);
      const T* x = inp + i0;
      T* y = out + i0;
      for (int64_t j = 0; j < count; ++j) {
        const float v = num::uniform_from_word(words[j]) >= p ? load(x[j]) * scale : 0.0f;
        y[j] = store<T>(v);
      }
    }
  });
}

}  // namespace

void dropout_forward(const ops::DropoutArgs& a) {
  OpTimer timer(OpCategory::other);
  dispatch_float(a.inp.dtype, [&](auto t) { dropout_impl<decltype(t)>(a); });
}

void dropout_backward(const ops::DropoutArgs& a) {
  OpTimer timer(OpCategory::other);
  dispatch_float(a.inp.dtype, [&](auto t) { dropout_impl<decltype(t)>(a); });
}

}  // namespace strata::cpu
