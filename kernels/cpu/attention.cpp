// CPU multi-head / grouped-query attention over packed qkv (B, T, (NH + 2*NKV)*HD),
// forward and backward. A task is one head (b, h) restricted to a range of query rows
// and/or key rows; it gathers the head's rows into contiguous f32 scratch and walks the
// queries in blocks of kBlock rows, so a thread never holds more than a (kBlock x T)
// score block. A sliding window W narrows each block to the keys its rows see, and a
// dK/dV task to the queries that see its keys. Query head h reads kv head
// h / (NH / NKV); a dK/dV task owns one kv head and loops over its group's query heads
// in order, so the sum is deterministic.
// Invariants: softmax statistics are f32 and the forward lse is of the un-dropped
// softmax; the dropout mask is a pure function of (dropout_key, element index
// ((b*NH + h)*T + i)*T + j), so backward replays it exactly; d_qkv is assigned, and
// every task writes a disjoint part of it.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu.h"
#include "fast_exp.h"
#include "strata/device.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

constexpr int64_t kBlock = 64;  // query rows per score block

// OpenBLAS runs inside oneTBB tasks, so it must not start threads of its own.
void blas_single_threaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

struct Geometry {
  int64_t B, T, NH, NKV, HD;
  int64_t C() const { return NH * HD; }                 // row stride of out, d_out
  int64_t stride() const { return (NH + 2 * NKV) * HD; }  // row stride of qkv
  int64_t group() const { return NH / NKV; }
  // Offsets in a qkv row of query head h's q, and of the k and v it reads.
  int64_t q_at(int64_t h) const { return h * HD; }
  int64_t k_at(int64_t h) const { return (NH + h / group()) * HD; }
  int64_t v_at(int64_t h) const { return (NH + NKV + h / group()) * HD; }
};

// Query heads [h, h + heads) of batch b, sharing one kv head, and the query rows
// [q0, q1) and key rows [k0, k1) one task covers.
struct Task {
  int64_t b, h, q0, q1, k0, k1;
  bool want_dq = true, want_dkv = true;
  int64_t heads = 1;
};

// dst (rows, HD) f32 <- rows of src spaced `stride` elements apart.
template <class T>
void gather(const T* src, int64_t stride, int64_t rows, int64_t HD, float* __restrict dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * stride;
    float* d = dst + r * HD;
    for (int64_t k = 0; k < HD; ++k) d[k] = load(s[k]);
  }
}

template <class T>
void scatter(const float* __restrict src, int64_t rows, int64_t HD, T* dst, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * HD;
    T* d = dst + r * stride;
    for (int64_t k = 0; k < HD; ++k) d[k] = store<T>(s[k]);
  }
}

// f[j] = keep ? 1/(1-p) : 0 for mask elements base + j, j < n. Equal to
// num::philox_uniform element by element, but runs Philox on kGroup counters at
// once, one 32-bit word per 64-bit vector lane, so the ten rounds vectorise.
void dropout_factors(const num::RandomKey& key, uint64_t base, int64_t n, float p, float* f) {
  constexpr int kGroup = 8;  // Philox blocks per step, 4 elements each
  using Lanes = uint64_t __attribute__((vector_size(8 * kGroup)));
  constexpr uint64_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  constexpr uint64_t kLow = 0xffffffffu;
  const float keep_scale = 1.0f / (1.0f - p);
  const uint64_t end = base + uint64_t(n);
  for (uint64_t block0 = base >> 2; block0 * 4 < end; block0 += kGroup) {
    Lanes c0, c1, c2, c3;
    for (int g = 0; g < kGroup; ++g) {
      uint64_t block = block0 + uint64_t(g);
      c0[g] = block & kLow, c1[g] = block >> 32, c2[g] = key.key1, c3[g] = key.key2;
    }
    uint64_t k0 = key.seed & kLow, k1 = key.seed >> 32;
    for (int round = 0; round < 10; ++round) {
      Lanes p0 = c0 * M0, p1 = c2 * M1;
      c0 = (p1 >> 32) ^ c1 ^ k0;
      c1 = p1 & kLow;
      c2 = (p0 >> 32) ^ c3 ^ k1;
      c3 = p0 & kLow;
      k0 = (k0 + W0) & kLow, k1 = (k1 + W1) & kLow;
    }
    uint32_t words[4 * kGroup];  // element order: word k of block g is element 4g + k
    for (int g = 0; g < kGroup; ++g) {
      words[4 * g] = uint32_t(c0[g]), words[4 * g + 1] = uint32_t(c1[g]);
      words[4 * g + 2] = uint32_t(c2[g]), words[4 * g + 3] = uint32_t(c3[g]);
    }
    const uint64_t first = std::max(base, block0 * 4), last = std::min(end, (block0 + kGroup) * 4);
    const uint64_t e0 = first - block0 * 4, e1 = last - block0 * 4;
    float* out = f + (block0 * 4 - base) + e0;  // element block0 * 4 + e0
    for (uint64_t e = e0; e < e1; ++e) out[e - e0] = num::uniform_from_word(words[e]) >= p ? keep_scale : 0.0f;
  }
}

// C (M, N) = alpha op(A) op(B) + beta C, row-major.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// Splits each head into `chunks` ranges of rows (multiples of kBlock): enough tasks
// that every core is busy when B*NH is small.
int64_t chunks_per_head(const Geometry& g, int64_t heads) {
  int64_t threads = std::max(1, num_threads());
  int64_t blocks = (g.T + kBlock - 1) / kBlock;
  if (heads >= 2 * threads) return 1;
  return std::clamp<int64_t>((4 * threads + heads - 1) / heads, 1, blocks);
}

int64_t chunk_rows(const Geometry& g, int64_t chunks) {
  int64_t rows = (g.T + chunks - 1) / chunks;
  return (rows + kBlock - 1) / kBlock * kBlock;
}

// The first key query row i sees: i - W + 1 under a sliding window W, else 0.
int64_t first_key(int64_t window, int64_t i) { return window > 0 ? std::max<int64_t>(0, i - window + 1) : 0; }

struct Scratch {
  std::vector<float> q, k, v, o, d_out, s, dp, f, dk, dv;
};

template <class T>
void forward_task(const ops::AttentionForwardArgs& a, const Geometry& g, const Task& t) {
  thread_local Scratch w;
  const int64_t T_ = g.T, HD = g.HD, C = g.C(), stride = g.stride();
  const T* row0 = a.qkv.ptr<T>() + t.b * T_ * stride;  // qkv of (b, 0)
  const T* q_head = row0 + g.q_at(t.h);
  // The task holds keys [k_lo, k_hi): a sliding window drops the ones before its first row's.
  const int64_t k_lo = first_key(a.window, t.q0), k_hi = a.causal ? t.q1 : T_;
  const int64_t nk_all = k_hi - k_lo;
  w.k.resize(size_t(nk_all * HD));
  w.v.resize(size_t(nk_all * HD));
  w.q.resize(size_t(kBlock * HD));
  w.o.resize(size_t(kBlock * HD));
  w.s.resize(size_t(kBlock * nk_all));
  w.f.resize(size_t(nk_all));
  gather(row0 + k_lo * stride + g.k_at(t.h), stride, nk_all, HD, w.k.data());  // (nk_all, HD)
  gather(row0 + k_lo * stride + g.v_at(t.h), stride, nk_all, HD, w.v.data());  // (nk_all, HD)
  const float scale = 1.0f / std::sqrt(float(HD));
  float* lse = a.lse.ptr<float>() + (t.b * g.NH + t.h) * T_;  // (T)
  T* out = a.out.ptr<T>() + t.b * T_ * C + t.h * HD;        // row stride C
  for (int64_t i0 = t.q0; i0 < t.q1; i0 += kBlock) {
    const int64_t rows = std::min(kBlock, t.q1 - i0);
    const int64_t lo = first_key(a.window, i0), nk = (a.causal ? i0 + rows : T_) - lo;  // block keys [lo, lo + nk)
    gather(q_head + i0 * stride, stride, rows, HD, w.q.data());
    float* s = w.s.data();  // (rows, nk)
    gemm(false, true, rows, nk, HD, 1.0f, w.q.data(), HD, w.k.data() + (lo - k_lo) * HD, HD, 0.0f, s, nk);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r, j0 = first_key(a.window, i), valid = (a.causal ? i + 1 : T_) - j0;
      float* row = s + r * nk;
      float* seen = row + (j0 - lo);  // keys [j0, j0 + valid)
      float shift = max_of(seen, valid) * scale;
      float sum = exp_sum(seen, seen, valid, scale, shift);
      lse[i] = shift + std::log(sum);
      float inv = 1.0f / sum;
      if (a.dropout > 0.0f) {
        float* f = w.f.data();
        dropout_factors(a.dropout_key, uint64_t(((t.b * g.NH + t.h) * T_ + i) * T_ + j0), valid, a.dropout, f);
        for (int64_t j = 0; j < valid; ++j) seen[j] *= inv * f[j];
      } else {
        for (int64_t j = 0; j < valid; ++j) seen[j] *= inv;
      }
      std::fill(row, seen, 0.0f);
      std::fill(seen + valid, row + nk, 0.0f);
    }
    gemm(false, false, rows, HD, nk, 1.0f, s, nk, w.v.data() + (lo - k_lo) * HD, HD, 0.0f, w.o.data(), HD);
    scatter(w.o.data(), rows, HD, out + i0 * C, C);
  }
}

// dS = P o (dP_dropped o F - D) and P <- P o F, on one block; see attention_backward.
// The task's query heads share its k, v rows; their dK, dV add up in head order.
template <class T>
void backward_task(const ops::AttentionBackwardArgs& a, const Geometry& g, const Task& t) {
  thread_local Scratch w;
  const int64_t T_ = g.T, HD = g.HD, C = g.C(), stride = g.stride();
  const T* row0 = a.qkv.ptr<T>() + t.b * T_ * stride;  // qkv of (b, 0)
  T* d_row0 = a.d_qkv.ptr<T>() + t.b * T_ * stride;
  const int64_t k_end = a.causal ? std::min(t.k1, t.q1) : t.k1;
  const int64_t nkr = k_end - t.k0;  // keys this task holds
  if (nkr <= 0) return;
  w.k.resize(size_t(nkr * HD));
  w.v.resize(size_t(nkr * HD));
  w.q.resize(size_t(kBlock * HD));
  w.d_out.resize(size_t(kBlock * HD));
  w.o.resize(size_t(kBlock * HD));  // dQ of the block
  w.s.resize(size_t(kBlock * nkr));
  w.dp.resize(size_t(kBlock * nkr));
  w.f.resize(size_t(nkr));
  gather(row0 + t.k0 * stride + g.k_at(t.h), stride, nkr, HD, w.k.data());  // (nkr, HD)
  gather(row0 + t.k0 * stride + g.v_at(t.h), stride, nkr, HD, w.v.data());  // (nkr, HD)
  if (t.want_dkv) {
    w.dk.assign(size_t(nkr * HD), 0.0f);
    w.dv.assign(size_t(nkr * HD), 0.0f);
  }
  const float scale = 1.0f / std::sqrt(float(HD));
  // Causal: queries before k0 see none of this task's keys; under a window W, nor do
  // queries from k_end + W - 1 on.
  const int64_t q_begin = a.causal ? std::max(t.q0, t.k0) : t.q0;
  const int64_t q_end = a.window > 0 ? std::min(t.q1, k_end + a.window - 1) : t.q1;
  for (int64_t h = t.h; h < t.h + t.heads; ++h) {
    const T* q_head = row0 + g.q_at(h);
    const T* d_out = a.d_out.ptr<T>() + t.b * T_ * C + h * HD;  // row stride C
    const T* out = a.out.ptr<T>() + t.b * T_ * C + h * HD;
    const float* lse = a.lse.ptr<float>() + (t.b * g.NH + h) * T_;
    for (int64_t i0 = q_begin; i0 < q_end; i0 += kBlock) {
      const int64_t rows = std::min(kBlock, q_end - i0);
      // The block's keys [lo, lo + nk) of the task's [k0, k_end).
      const int64_t lo = std::max(t.k0, first_key(a.window, i0));
      const int64_t nk = a.causal ? std::min(k_end, i0 + rows) - lo : nkr;
      const float* k_blk = w.k.data() + (lo - t.k0) * HD;
      const float* v_blk = w.v.data() + (lo - t.k0) * HD;
      gather(q_head + i0 * stride, stride, rows, HD, w.q.data());  // (rows, HD)
      gather(d_out + i0 * C, C, rows, HD, w.d_out.data());        // (rows, HD)
      float* s = w.s.data();    // (rows, nk): P, then P o F
      float* dp = w.dp.data();  // (rows, nk): dP of the dropped probabilities, then dS
      gemm(false, true, rows, nk, HD, 1.0f, w.q.data(), HD, k_blk, HD, 0.0f, s, nk);
      gemm(false, true, rows, nk, HD, 1.0f, w.d_out.data(), HD, v_blk, HD, 0.0f, dp, nk);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        // Row i's keys here: [j0, j0 + valid).
        const int64_t j0 = std::max(lo, first_key(a.window, i));
        const int64_t valid = std::max<int64_t>(0, (a.causal ? std::min(i + 1, k_end) : t.k1) - j0);
        float* srow = s + r * nk;
        float* dprow = dp + r * nk;
        float* sv = srow + (j0 - lo);
        float* dpv = dprow + (j0 - lo);
        // D_i = dO_i . O_i = sum_j P_ij dP_ij, since O = (P o F) V.
        const T* o_src = out + i * C;
        const float* do_i = w.d_out.data() + r * HD;
        float D = 0.0f;
        for (int64_t k = 0; k < HD; ++k) D += do_i[k] * load(o_src[k]);
        exp_sum(sv, sv, valid, scale, lse[i]);
        if (a.dropout > 0.0f) {
          float* f = w.f.data();
          dropout_factors(a.dropout_key, uint64_t(((t.b * g.NH + h) * T_ + i) * T_ + j0), valid, a.dropout, f);
          for (int64_t j = 0; j < valid; ++j) {
            dpv[j] = sv[j] * (dpv[j] * f[j] - D);
            sv[j] *= f[j];
          }
        } else {
          for (int64_t j = 0; j < valid; ++j) dpv[j] = sv[j] * (dpv[j] - D);
        }
        std::fill(srow, sv, 0.0f);
        std::fill(dprow, dpv, 0.0f);
        std::fill(sv + valid, srow + nk, 0.0f);
        std::fill(dpv + valid, dprow + nk, 0.0f);
      }
      if (t.want_dkv) {
        float* dv_blk = w.dv.data() + (lo - t.k0) * HD;
        float* dk_blk = w.dk.data() + (lo - t.k0) * HD;
        gemm(true, false, nk, HD, rows, 1.0f, s, nk, w.d_out.data(), HD, 1.0f, dv_blk, HD);
        gemm(true, false, nk, HD, rows, scale, dp, nk, w.q.data(), HD, 1.0f, dk_blk, HD);
      }
      if (t.want_dq) {  // the task holds every key this block sees, so dQ is complete
        gemm(false, false, rows, HD, nk, scale, dp, nk, k_blk, HD, 0.0f, w.o.data(), HD);
        scatter(w.o.data(), rows, HD, d_row0 + i0 * stride + g.q_at(h), stride);
      }
    }
  }
  if (t.want_dkv) {
    scatter(w.dk.data(), nkr, HD, d_row0 + t.k0 * stride + g.k_at(t.h), stride);
    scatter(w.dv.data(), nkr, HD, d_row0 + t.k0 * stride + g.v_at(t.h), stride);
  }
}

Geometry geometry(const TensorView& qkv, int64_t n_heads, int64_t n_kv_heads) {
  const int64_t nkv = n_kv_heads == 0 ? n_heads : n_kv_heads;
  return {qkv.shape[0], qkv.shape[1], n_heads, nkv, qkv.shape[2] / (n_heads + 2 * nkv)};
}

}  // namespace

void attention_forward(const ops::AttentionForwardArgs& a) {
  OpTimer timer(OpCategory::attention);
  blas_single_threaded();
  const Geometry g = geometry(a.qkv, a.n_heads, a.n_kv_heads);
  const int64_t heads = g.B * g.NH;
  const int64_t chunks = chunks_per_head(g, heads), rows = chunk_rows(g, chunks);
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_for(heads * chunks, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        int64_t head = n / chunks, c = n % chunks;
        int64_t q0 = c * rows, q1 = std::min(g.T, q0 + rows);
        if (q0 >= q1) continue;
        forward_task<T>(a, g, Task{head / g.NH, head % g.NH, q0, q1, 0, g.T});
      }
    });
  });
}

// With P = softmax(S), F the dropout factors and O = (P o F) V:
//   dV = (P o F)^T dO,  dP = (dO V^T) o F,  dS = P o (dP - D),  D_i = dO_i . O_i,
//   dQ = scale dS K,    dK = scale dS^T Q.
// Many kv heads: one task per kv head and its group. Few: tasks over query ranges of
// one query head compute dQ and tasks over key ranges of one kv head compute dK, dV,
// each recomputing the scores it needs.
void attention_backward(const ops::AttentionBackwardArgs& a) {
  OpTimer timer(OpCategory::attention);
  blas_single_threaded();
  const Geometry g = geometry(a.qkv, a.n_heads, a.n_kv_heads);
  const int64_t kv_heads = g.B * g.NKV, heads = g.B * g.NH, group = g.group();
  const int64_t chunks = chunks_per_head(g, kv_heads), rows = chunk_rows(g, chunks);
  const int64_t n_tasks = chunks == 1 ? kv_heads : (heads + kv_heads) * chunks;
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    parallel_for(n_tasks, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        if (chunks == 1) {
          Task t{n / g.NKV, n % g.NKV * group, 0, g.T, 0, g.T};
          t.heads = group;
          backward_task<T>(a, g, t);
          continue;
        }
        bool keys = n >= heads * chunks;
        int64_t m = keys ? n - heads * chunks : n;
        int64_t head = m / chunks, c = m % chunks;
        int64_t r0 = c * rows, r1 = std::min(g.T, r0 + rows);
        if (r0 >= r1) continue;
        Task t{head / g.NH, head % g.NH, 0, g.T, 0, g.T};
        if (keys) {  // head indexes the kv heads
          t.b = head / g.NKV, t.h = head % g.NKV * group, t.heads = group;
          t.k0 = r0, t.k1 = r1, t.want_dq = false;
        } else {
          t.q0 = r0, t.q1 = r1, t.want_dkv = false;
        }
        backward_task<T>(a, g, t);
      }
    });
  });
}

}  // namespace strata::cpu
