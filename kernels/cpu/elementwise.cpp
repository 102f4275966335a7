// CPU elementwise ops: add, scale, cast, accumulate, fill_zero. All are memory
// bound, so each is one contiguous pass that vectorises, split across cores in
// chunks of kGrain elements.
// Invariant: out may alias an input exactly (add, scale, accumulate), never partly;
// every element is computed in f32 and rounded once, by num::store, so a result
// does not depend on chunking or on the vector width.
#include <cstring>
#include <type_traits>

#include "convert_block.h"
#include "cpu.h"
#include "util.h"
#include "op_profile.h"

// Exact aliasing of out with an input is safe element by element, which the
// compiler cannot prove; without this it would fall back to scalar code.
#if defined(__GNUC__) && !defined(__clang__)
#define STRATA_IVDEP _Pragma("GCC ivdep")
#else
#define STRATA_IVDEP
#endif

namespace strata::cpu {

namespace {

constexpr int64_t kGrain = int64_t(1) << 16;

template <class T>
constexpr bool kIsF16 = std::is_same_v<T, f16>;

// out[i] = store<O>(f(load(a[i]))). f16 goes through f32 scratch, since only the
// hardware converters vectorise it; f32 and bf16 vectorise in place.
template <class O, class I, class F>
void map_unary(O* out, const I* inp, int64_t n, F f) {
  if constexpr (!kIsF16<O> && !kIsF16<I>) {
    STRATA_IVDEP
    for (int64_t i = 0; i < n; ++i) out[i] = store<O>(f(load(inp[i])));
  } else {
    alignas(64) float x[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      int64_t len = n - i0 < kBlock ? n - i0 : kBlock;
      load_block(inp + i0, x, len);
      for (int64_t j = 0; j < len; ++j) x[j] = f(x[j]);
      store_block(x, out + i0, len);
    }
  }
}

// out[i] = store<O>(f(load(a[i]), load(b[i]))).
template <class O, class A, class B, class F>
void map_binary(O* out, const A* a, const B* b, int64_t n, F f) {
  if constexpr (!kIsF16<O> && !kIsF16<A> && !kIsF16<B>) {
    STRATA_IVDEP
    for (int64_t i = 0; i < n; ++i) out[i] = store<O>(f(load(a[i]), load(b[i])));
  } else {
    alignas(64) float x[kBlock], y[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      int64_t len = n - i0 < kBlock ? n - i0 : kBlock;
      load_block(a + i0, x, len);
      load_block(b + i0, y, len);
      for (int64_t j = 0; j < len; ++j) x[j] = f(x[j], y[j]);
      store_block(x, out + i0, len);
    }
  }
}

struct Plus {
  float operator()(float x, float y) const { return x + y; }
};

}  // namespace

void add(const ops::AddArgs& a) {
  OpTimer timer(OpCategory::other);
  dispatch_float(a.out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* out = a.out.ptr<T>();  // may be a or b
    const T* x = a.a.ptr<T>();
    const T* y = a.b.ptr<T>();
    parallel_for(a.out.numel(), kGrain, [&](int64_t begin, int64_t end) {
      map_binary(out + begin, x + begin, y + begin, end - begin, Plus{});
    });
  });
}

void scale(const ops::ScaleArgs& a) {
  OpTimer timer(OpCategory::other);
  const float alpha = a.alpha;
  dispatch_float(a.out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* out = a.out.ptr<T>();  // may be inp
    const T* inp = a.inp.ptr<T>();
    parallel_for(a.out.numel(), kGrain, [&](int64_t begin, int64_t end) {
      map_unary(out + begin, inp + begin, end - begin, [alpha](float x) { return x * alpha; });
    });
  });
}

void cast(const ops::CastArgs& a) {
  OpTimer timer(OpCategory::other);
  const int64_t n = a.out.numel();
  if (a.out.dtype == a.inp.dtype) {  // a copy: keeps every bit, NaN payloads included
    char* out = static_cast<char*>(a.out.data);
    const char* inp = static_cast<const char*>(a.inp.data);
    const int64_t size = int64_t(dtype_size(a.out.dtype));
    parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
      std::memmove(out + begin * size, inp + begin * size, size_t((end - begin) * size));
    });
    return;
  }
  dispatch_float(a.inp.dtype, [&](auto in_tag) {
    using I = decltype(in_tag);
    dispatch_float(a.out.dtype, [&](auto out_tag) {
      using O = decltype(out_tag);
      O* out = a.out.ptr<O>();
      const I* inp = a.inp.ptr<I>();
      parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
        map_unary(out + begin, inp + begin, end - begin, [](float x) { return x; });
      });
    });
  });
}

void accumulate(const ops::AccumulateArgs& a) {
  OpTimer timer(OpCategory::other);
  const int64_t n = a.out.numel();
  dispatch_float(a.inp.dtype, [&](auto in_tag) {
    using I = decltype(in_tag);
    const I* inp = a.inp.ptr<I>();
    auto run = [&](auto* out) {
      parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
        map_binary(out + begin, out + begin, inp + begin, end - begin, Plus{});
      });
    };
    // The entry point allows exactly two output dtypes: f32, or inp's own.
    if (a.out.dtype == DType::f32)
      run(a.out.ptr<float>());
    else
      run(a.out.ptr<I>());
  });
}

void fill_zero(const TensorView& out) {
  OpTimer timer(OpCategory::other);
  char* p = static_cast<char*>(out.data);
  const int64_t bytes = int64_t(out.nbytes());
  parallel_for(bytes, kGrain * 4, [&](int64_t begin, int64_t end) {
    std::memset(p + begin, 0, size_t(end - begin));
  });
}

}  // namespace strata::cpu
