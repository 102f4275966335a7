// What matmul.cu's cuBLASLt plan cache is keyed by, and the parts of it that need no
// CUDA: the GEMMs matmul_forward / matmul_backward hand to cuBLASLt (GemmCall: row-
// major tensors as column-major transposes, leading dimensions from the tensors'
// last dimensions, so a padded vocabulary's Vp reaches the heuristic), the key of one
// GEMM (shape, leading dimensions, dtypes, transposes, epilogue, operand alignments),
// the alignment of an operand from its pointer and leading dimension, the description
// every cuBLAS error carries, and the cache itself (plan type left open, so CPU tests
// drive it with a plain struct).
// Invariant: two GEMMs with equal keys may share one cuBLASLt descriptor and algorithm:
// everything the heuristic reads is in the key — of the pointers (operands, bias, GELU
// aux) only their alignment, which is all the heuristic reads of them; the bias and aux
// pointers themselves are set on the descriptor at each call, under the cache's lock.
#pragma once
#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "../ops.h"
#include "strata/dtype.h"

namespace strata::gemm {

// What cuBLASLt fuses after the product (CUBLASLT_EPILOGUE_*).
enum class Epilogue : uint8_t { none, bias, gelu_aux, gelu_aux_bias };

inline const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::bias: return "bias";
    case Epilogue::gelu_aux: return "gelu_aux";
    case Epilogue::gelu_aux_bias: return "gelu_aux_bias";
    default: return "none";
  }
}

inline Epilogue epilogue_of(bool bias, bool gelu_aux) {
  return gelu_aux ? (bias ? Epilogue::gelu_aux_bias : Epilogue::gelu_aux) : bias ? Epilogue::bias : Epilogue::none;
}

// The largest alignment cuBLASLt distinguishes (its MIN_ALIGNMENT preferences default
// to it: a plan made without them assumes 256-byte aligned operands).
constexpr uint32_t kMaxAlignment = 256;

// The largest power of two, at most kMaxAlignment, dividing both the address and the
// byte stride between columns (ld elements): every column then starts that aligned.
inline uint32_t alignment_bytes(const void* p, int64_t ld, size_t element_bytes) {
  uint64_t bits = uint64_t(reinterpret_cast<uintptr_t>(p)) | uint64_t(ld) * element_bytes | kMaxAlignment;
  return uint32_t(bits & (~bits + 1));  // lowest set bit
}

// One GEMM as cuBLASLt sees it: D (m x n, column-major, ldd) = op(A) op(B), op(A)
// m x k, op(B) k x n; A stored (trans_a ? k x m : m x k) with leading dimension lda.
struct GemmKey {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldd = 0;
  DType a = DType::f32, b = DType::f32, d = DType::f32;
  bool trans_a = false, trans_b = false;
  Epilogue epilogue = Epilogue::none;
  uint32_t align_a = kMaxAlignment, align_b = kMaxAlignment, align_d = kMaxAlignment;  // bytes
  // Of the bias vector and the GELU aux matrix (ld = ldd, D's dtype); kMaxAlignment
  // when the epilogue has none.
  uint32_t align_bias = kMaxAlignment, align_aux = kMaxAlignment;

  bool operator==(const GemmKey& o) const {  // by hand: nvcc compiles this as C++17
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldd == o.ldd && a == o.a &&
           b == o.b && d == o.d && trans_a == o.trans_a && trans_b == o.trans_b && epilogue == o.epilogue &&
           align_a == o.align_a && align_b == o.align_b && align_d == o.align_d && align_bias == o.align_bias &&
           align_aux == o.align_aux;
  }
};

// One operand as cuBLASLt sees it: column-major, ld in elements, stored transposed
// when trans.
struct Operand {
  const void* data;
  DType dtype;
  int64_t ld;
  bool trans;
};

// One GEMM: D (m x n, column-major, ldd) = op(A) op(B) + beta D.
struct GemmCall {
  int64_t m, n, k;
  Operand a, b;
  void* d;
  DType d_type;
  int64_t ldd;
  float beta;
};

// Row-major out (N, OC) is column-major out' (OC, N) = W'^T (OC x IC) inp' (IC x N),
// D = out or gelu_pre, with ldd their row stride (OC, or Vp when out_padded).
inline GemmCall forward_call(const ops::MatmulForwardArgs& a, const TensorView& d) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  return {oc, n, ic, {a.weight.data, a.weight.dtype, ic, true}, {a.inp.data, a.inp.dtype, ic, false},
          d.data, d.dtype, d.size(-1), 0.0f};
}

// d_inp' (IC, N) = W' (IC x OC) d_out' (OC x N), d_out' with ld its row stride.
inline GemmCall input_grad_call(const ops::MatmulBackwardArgs& a) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  return {ic, n, oc, {a.weight.data, a.weight.dtype, ic, false}, {a.d_out.data, a.d_out.dtype, a.d_out.size(-1), false},
          a.d_inp.data, a.d_inp.dtype, ic, 0.0f};
}

// d_weight' (IC, OC) += inp' (IC x N) d_out'^T (N x OC).
inline GemmCall weight_grad_call(const ops::MatmulBackwardArgs& a) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  return {ic, oc, n, {a.inp.data, a.inp.dtype, ic, false}, {a.d_out.data, a.d_out.dtype, a.d_out.size(-1), true},
          a.d_weight.data, a.d_weight.dtype, ic, 1.0f};
}

// The key of a call with its epilogue's bias and GELU-aux pointers (null: none).
inline GemmKey key_of(const GemmCall& g, const void* bias, const void* gelu_aux) {
  GemmKey key;
  key.m = g.m, key.n = g.n, key.k = g.k, key.lda = g.a.ld, key.ldb = g.b.ld, key.ldd = g.ldd;
  key.a = g.a.dtype, key.b = g.b.dtype, key.d = g.d_type, key.trans_a = g.a.trans, key.trans_b = g.b.trans;
  key.epilogue = epilogue_of(bias != nullptr, gelu_aux != nullptr);
  key.align_a = alignment_bytes(g.a.data, g.a.ld, dtype_size(g.a.dtype));
  key.align_b = alignment_bytes(g.b.data, g.b.ld, dtype_size(g.b.dtype));
  key.align_d = alignment_bytes(g.d, g.ldd, dtype_size(g.d_type));
  if (bias) key.align_bias = alignment_bytes(bias, 0, dtype_size(g.d_type));
  if (gelu_aux) key.align_aux = alignment_bytes(gelu_aux, g.ldd, dtype_size(g.d_type));
  return key;
}

struct GemmKeyHash {
  size_t operator()(const GemmKey& key) const {
    const int64_t fields[] = {key.m,          key.n,         key.k,           key.lda,
                              key.ldb,        key.ldd,       int64_t(key.a),  int64_t(key.b),
                              int64_t(key.d), key.trans_a,   key.trans_b,     int64_t(key.epilogue),
                              key.align_a,    key.align_b,   key.align_d,     key.align_bias,
                              key.align_aux};
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    for (int64_t f : fields) h = (h ^ uint64_t(f)) * 1099511628211ull;
    return size_t(h);
  }
};

// "GEMM m 768 n 16384 k 2304: A bf16 T ld 2304 (16-byte aligned), B bf16 N ld 2304
// (256-byte aligned), D bf16 ld 768 (256-byte aligned), epilogue bias (64-byte
// aligned)": what every failing cuBLAS status of this GEMM says.
inline std::string describe(const GemmKey& key) {
  std::ostringstream s;
  s << "GEMM m " << key.m << " n " << key.n << " k " << key.k << ": A " << dtype_name(key.a) << ' '
    << (key.trans_a ? 'T' : 'N') << " ld " << key.lda << " (" << key.align_a << "-byte aligned), B "
    << dtype_name(key.b) << ' ' << (key.trans_b ? 'T' : 'N') << " ld " << key.ldb << " (" << key.align_b
    << "-byte aligned), D " << dtype_name(key.d) << " ld " << key.ldd << " (" << key.align_d
    << "-byte aligned), epilogue " << epilogue_name(key.epilogue);
  const bool bias = key.epilogue == Epilogue::bias || key.epilogue == Epilogue::gelu_aux_bias;
  const bool aux = key.epilogue == Epilogue::gelu_aux || key.epilogue == Epilogue::gelu_aux_bias;
  if (bias || aux) {
    s << " (";
    if (bias) s << "bias " << key.align_bias << "-byte aligned" << (aux ? ", " : "");
    if (aux) s << "aux ld " << key.ldd << ", " << key.align_aux << "-byte aligned";
    s << ')';
  }
  return s.str();
}

// Plans by key, made once and kept. `use` runs under the cache's lock, so a plan may be
// mutated there (per-call pointers on a shared descriptor) by several ranks' threads
// sharing a device. Past `capacity` keys (a run with ever-changing shapes, e.g.
// sampling with a growing sequence) the cache starts over rather than grow without end.
template <class Plan>
class PlanCache {
 public:
  explicit PlanCache(size_t capacity = 1024) : capacity_(capacity) {}

  template <class Make, class Use>
  auto with(const GemmKey& key, Make&& make, Use&& use) {
    std::lock_guard lock(mutex_);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      if (plans_.size() >= capacity_) plans_.clear();
      it = plans_.emplace(key, make()).first;  // make() throws: nothing is stored
      ++made_;
    }
    return use(it->second);
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return plans_.size();
  }
  size_t made() const {  // plans made so far, for tests: equal keys make one
    std::lock_guard lock(mutex_);
    return made_;
  }

 private:
  size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<GemmKey, Plan, GemmKeyHash> plans_;
  size_t made_ = 0;
};

}  // namespace strata::gemm
