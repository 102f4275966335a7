// CUDA attention on tensor cores (bf16 / fp16 storage, f32 accumulation), the
// FlashAttention-2 structure over packed qkv (B, T, (NH + 2*NKV)*HD), written against
// nvcuda::wmma so the emulator (emu/wmma.h) runs the very same source:
//  - forward: a block owns kRows = 64 query rows of one head (4 warps x 16 rows, Q held
//    in fragments) and streams K/V tiles of kCols rows through shared memory;
//    S = Q K^T and O += P V on WMMA, online softmax in f32, causal tiles past the
//    diagonal skipped, the diagonal tile masked (a sliding window also skips the
//    tiles before its reach and masks the tile at its edge); lse saved per row;
//  - dK/dV: a block owns 64 key rows of one kv head and walks the query tiles of each
//    query head of its group in order (the group sum, deterministic); dQ: a block owns 64
//    query rows and walks the key tiles; both recompute P from lse and use D, so no
//    atomics and d_qkv is assigned deterministically.
// Head dims up to 128 run zero-padded to HDP = 64 or 128; kCols is 64 (32 for HDP 128,
// to bound shared memory).
// Invariants: kernel code never relies on the WMMA fragment layout — row-wise values
// (the softmax statistics) reach fragments only through shared memory, as a (16, 16)
// tile with every row broadcast, loaded into a fragment of the same type; shared rows
// are padded (+8 halves, +4 floats) so WMMA rows and the lanes of the softmax loops
// (lane l: row l % 16, columns of parity l / 16) spread over the banks; the dropout
// mask and lse follow attention.cuh.
#include <type_traits>

#include "attention.cuh"

#if defined(STRATA_CUDA_EMULATION)
#include "emu/wmma.h"
#define STRATA_UNROLL
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#define STRATA_UNROLL _Pragma("unroll")
#endif

namespace strata::STRATA_CUDA_NS {

namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4, kFlashThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // rows a block owns: 16 per warp
// Softmax exponentials are exp2 (one hardware instruction) of scores in log2 units.
constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;

template <int HDP>
struct Tile {
  static constexpr int cols = HDP > 64 ? 32 : 64;  // rows of the streamed side per step
  static constexpr int ldh = HDP + 8;              // (rows, HDP) 16-bit tiles
  static constexpr int ldp = cols + 8;             // (16, cols) 16-bit probabilities
  static constexpr int lds = cols + 4;             // (16, cols) f32 staging
  static constexpr int frags = HDP / 16, col_frags = cols / 16;
  static_assert(ldp <= ldh, "the forward's P strip of a warp lives in its 16 rows of Q");
  static_assert(ldh * 2 % 16 == 0 && ldp * 2 % 16 == 0 && lds * 4 % 16 == 0, "WMMA ldm: a multiple of 16 bytes");
};

template <class T>
struct WmmaType;
template <>
struct WmmaType<bf16> {
  using type = __nv_bfloat16;
};
template <>
struct WmmaType<f16> {
  using type = __half;
};

template <class T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, typename WmmaType<T>::type, wmma::row_major>;
template <class T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, typename WmmaType<T>::type, wmma::row_major>;
template <class T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, typename WmmaType<T>::type, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// A shared pointer as one to another element type (the 16-bit tiles as the WMMA
// types, 16-bit rows as 16-byte chunks, the staging area as f32).
template <class U, class T>
__device__ __forceinline__ SharedPtr<U> shared_cast(SharedPtr<T> p) {
#if defined(STRATA_CUDA_EMULATION)
  return SharedPtr<U>(reinterpret_cast<U*>(p.get()), p.region());
#else
  return reinterpret_cast<U*>(p);
#endif
}

template <class T>
__device__ __forceinline__ auto wt(SharedPtr<T> p) {
  return shared_cast<const typename WmmaType<std::remove_const_t<T>>::type>(p);
}

}  // namespace

// The first query row of the block: the last tile first, since under a causal mask it
// has the most key tiles to walk and blocks start in index order.
static __device__ __forceinline__ int64_t heavy_first_tile() { return int64_t(gridDim.x - 1 - blockIdx.x) * kRows; }

// 16 bytes: eight 16-bit elements, copied as one vector load / store.
struct alignas(16) Chunk {
  uint32_t w[4];
};

// dst (rows, HDP), row stride Tile::ldh <- rows row0.. of src (row stride `stride`);
// zero past T and past HD, so padding contributes nothing to any product.
template <class T, int HDP>
static __device__ void load_rows(SharedPtr<T> dst, const T* src, int64_t stride, int64_t row0, int rows,
                                 const AttentionGeometry& g) {
  constexpr int ldh = Tile<HDP>::ldh, kChunk = 8, chunks = HDP / kChunk;
  if (g.HD == HDP && stride % kChunk == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    for (int e = threadIdx.x; e < rows * chunks; e += blockDim.x) {
      const int r = e / chunks, d = e % chunks * kChunk;
      Chunk v{};
      if (row0 + r < g.T) v = *reinterpret_cast<const Chunk*>(src + (row0 + r) * stride + d);
      shared_cast<Chunk>(dst + r * ldh + d)[0] = v;
    }
    return;
  }
  for (int e = threadIdx.x; e < rows * HDP; e += blockDim.x) {
    const int r = e / HDP, d = e % HDP;
    const bool in = row0 + r < g.T && d < g.HD;
    dst[r * ldh + d] = in ? src[(row0 + r) * stride + d] : store<T>(0.0f);
  }
}

// stage (16, cols) f32 = a (16, HDP) b^T for b (cols, HDP): the warp's strip of scores.
template <class T, int HDP>
static __device__ void strip_scores(SharedPtr<float> stage, SharedPtr<const T> a, SharedPtr<const T> b) {
  using L = Tile<HDP>;
  STRATA_UNROLL
  for (int n = 0; n < L::col_frags; ++n) {
    FragC s;
    wmma::fill_fragment(s, 0.0f);
    STRATA_UNROLL
    for (int k = 0; k < L::frags; ++k) {
      FragA<T> fa;
      FragBCol<T> fb;
      wmma::load_matrix_sync(fa, wt(a + k * 16), L::ldh);
      wmma::load_matrix_sync(fb, wt(b + n * 16 * L::ldh + k * 16), L::ldh);
      wmma::mma_sync(s, fa, fb, s);
    }
    wmma::store_matrix_sync(stage + n * 16, s, L::lds, wmma::mem_row_major);
  }
}

// acc[d] += p (16, cols) v (cols, HDP), p with row stride Tile::ldp.
template <class T, int HDP>
static __device__ void strip_accumulate(FragC (&acc)[Tile<HDP>::frags], SharedPtr<const T> p, SharedPtr<const T> v) {
  using L = Tile<HDP>;
  STRATA_UNROLL
  for (int k = 0; k < L::col_frags; ++k) {
    FragA<T> fa;
    wmma::load_matrix_sync(fa, wt(p + k * 16), L::ldp);
    STRATA_UNROLL
    for (int d = 0; d < L::frags; ++d) {
      FragBRow<T> fb;
      wmma::load_matrix_sync(fb, wt(v + k * 16 * L::ldh + d * 16), L::ldh);
      wmma::mma_sync(acc[d], fa, fb, acc[d]);
    }
  }
}

// acc[d] *= value of the row of each element, for this lane's row r = lane % 16 (both
// lanes of a row pass the same value), through a row-broadcast tile in `stage`.
template <int HDP>
static __device__ void scale_rows(FragC (&acc)[Tile<HDP>::frags], SharedPtr<float> stage, float value) {
  const int lane = threadIdx.x % 32, r = lane % 16, parity = lane / 16;
  __syncwarp();  // the warp is done reading stage
  for (int c = 0; c < 8; ++c) stage[r * Tile<HDP>::lds + 2 * c + parity] = value;
  __syncwarp();
  FragC f;
  wmma::load_matrix_sync(f, stage, Tile<HDP>::lds, wmma::mem_row_major);
  STRATA_UNROLL
  for (int d = 0; d < Tile<HDP>::frags; ++d)
    for (int t = 0; t < f.num_elements; ++t) acc[d].x[t] *= f.x[t];
}

// Writes the warp's strip acc (16, HDP) * factor to rows row0.. of dst (row stride
// `stride`), rows < T and columns < HD, through stage (16, cols).
template <class T, int HDP>
static __device__ void store_strip(T* dst, int64_t stride, int64_t row0, FragC (&acc)[Tile<HDP>::frags],
                                   SharedPtr<float> stage, float factor, const AttentionGeometry& g) {
  using L = Tile<HDP>;
  const int lane = threadIdx.x % 32;
  STRATA_UNROLL
  for (int d0 = 0; d0 < L::frags; d0 += L::col_frags) {
    __syncwarp();
    STRATA_UNROLL
    for (int d = 0; d < L::col_frags; ++d)
      wmma::store_matrix_sync(stage + d * 16, acc[d0 + d], L::lds, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 16 * L::cols; e += 32) {
      const int r = e / L::cols, col = d0 * 16 + e % L::cols;
      const float v = stage[r * L::lds + e % L::cols];
      if (row0 + r < g.T && col < g.HD) dst[(row0 + r) * stride + col] = store<T>(v * factor);
    }
  }
}

// grid (query tiles of kRows, B*NH), kFlashThreads threads.
// Shared: K, V (cols, ldh); Q (kRows, ldh), each warp's 16 rows reused for its P
// (16, ldp) once Q is in fragments; per warp f32 staging (16, lds).
template <class T, int HDP>
static __global__ void __launch_bounds__(kFlashThreads, 2)
    flash_forward_kernel(T* out, float* lse, const T* qkv, AttentionGeometry g) {
  using L = Tile<HDP>;
  STRATA_DYNAMIC_SHARED(T, smem);
  SharedPtr<T> k_s = smem;
  SharedPtr<T> v_s = k_s + L::cols * L::ldh;
  SharedPtr<T> q_s = v_s + L::cols * L::ldh;
  SharedPtr<float> stage_all = shared_cast<float>(q_s + kRows * L::ldh);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane % 16, parity = lane / 16;
  const int64_t bh = blockIdx.y, b = bh / g.NH, h = bh % g.NH, i0 = heavy_first_tile();
  const int64_t stride = g.stride(), i = i0 + warp * 16 + r;  // i: this lane's query row
  const T* row0 = qkv + b * g.T * stride;                      // qkv of (b, 0)
  SharedPtr<T> p_w = q_s + warp * 16 * L::ldh;  // (16, ldp) after Q is loaded
  SharedPtr<float> stage = stage_all + warp * 16 * L::lds;

  load_rows<T, HDP>(q_s, row0 + g.q_at(h), stride, i0, kRows, g);
  __syncthreads();
  FragA<T> qa[L::frags];
  FragC o[L::frags];
  STRATA_UNROLL
  for (int k = 0; k < L::frags; ++k) {
    wmma::load_matrix_sync(qa[k], wt(p_w + k * 16), L::ldh);
    wmma::fill_fragment(o[k], 0.0f);
  }
  // Running max (of scores in log2 units) and sum of row i, in both lanes of the row.
  const float scale_log2 = g.scale * kLog2e;
  float m = -INFINITY, l = 0.0f;
  const int64_t key_end = g.causal ? (i0 + kRows < g.T ? i0 + kRows : g.T) : g.T;
  for (int64_t j0 = g.first_key_tile(i0, L::cols); j0 < key_end; j0 += L::cols) {
    __syncthreads();  // the previous K, V are consumed (and Q is in fragments)
    load_rows<T, HDP>(k_s, row0 + g.k_at(h), stride, j0, L::cols, g);
    load_rows<T, HDP>(v_s, row0 + g.v_at(h), stride, j0, L::cols, g);
    __syncthreads();
    STRATA_UNROLL
    for (int n = 0; n < L::col_frags; ++n) {
      FragC s;
      wmma::fill_fragment(s, 0.0f);
      STRATA_UNROLL
      for (int k = 0; k < L::frags; ++k) {
        FragBCol<T> kb;
        wmma::load_matrix_sync(kb, wt(k_s + n * 16 * L::ldh + k * 16), L::ldh);
        wmma::mma_sync(s, qa[k], kb, s);
      }
      wmma::store_matrix_sync(stage + n * 16, s, L::lds, wmma::mem_row_major);
    }
    __syncwarp();
    SharedPtr<float> row = stage + r * L::lds;
    float mx = m;
    for (int c = parity; c < L::cols; c += 2) {
      const int64_t j = j0 + c;
      const float score = row[c];  // read by every lane: uniform shared accesses across the warp
      const float v = j < g.T && g.sees(i, j) ? score * scale_log2 : -INFINITY;
      row[c] = v;
      mx = fmaxf(mx, v);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    // Without a window every row sees key 0 in the first tile; under one a row may see
    // nothing yet (mx = -inf): shift by 0 then, so its p, alpha and l stay 0.
    const float shift = mx == -INFINITY ? 0.0f : mx;
    float sum = 0.0f;
    for (int c = parity; c < L::cols; c += 2) {
      const float p = exp2f(row[c] - shift);
      sum += p;
      p_w[r * L::ldp + c] = store<T>(p * attention_dropout(g, bh, i, j0 + c));
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 16);
    const float alpha = exp2f(m - shift);
    l = l * alpha + sum;
    m = mx;
    scale_rows<HDP>(o, stage, alpha);  // also orders the P writes before the loads below
    strip_accumulate<T, HDP>(o, p_w, v_s);
  }
  scale_rows<HDP>(o, stage, 1.0f / l);
  if (parity == 0 && i < g.T) lse[bh * g.T + i] = (m + log2f(l)) * kLn2;
  store_strip<T, HDP>(out + b * g.T * g.C() + h * g.HD, g.C(), i0 + warp * 16, o, stage, 1.0f, g);
}

// The warp's (16, cols) strips of dS = P o (dP o F - D) (into ds, row stride ldp) and,
// when pf is not null, P o F; s and dp are the f32 stagings of the scores and of dP.
// rows_are_queries: the strip's rows are queries (dQ); else keys (dK/dV: transposed strips).
template <class T, int HDP>
static __device__ void strip_grads(SharedPtr<T> ds, SharedPtr<T> pf, SharedPtr<const float> s,
                                   SharedPtr<const float> dp, bool rows_are_queries, int64_t row, int64_t col0,
                                   float row_lse, float row_delta, SharedPtr<const float> col_lse,
                                   SharedPtr<const float> col_delta, int64_t bh, const AttentionGeometry& g) {
  using L = Tile<HDP>;
  const int lane = threadIdx.x % 32, r = lane % 16, parity = lane / 16;
  for (int c = parity; c < L::cols; c += 2) {
    const int64_t i = rows_are_queries ? row : col0 + c, j = rows_are_queries ? col0 + c : row;
    const bool valid = i < g.T && j < g.T && g.sees(i, j);
    const float score = s[r * L::lds + c];
    float p = 0.0f, f = 0.0f;
    const float lse = rows_are_queries ? row_lse : float(col_lse[c]);
    const float delta = rows_are_queries ? row_delta : float(col_delta[c]);
    if (valid) {
      p = exp2f((score * g.scale - lse) * kLog2e);
      f = attention_dropout(g, bh, i, j);
    }
    ds[r * L::ldp + c] = store<T>(p * (dp[r * L::lds + c] * f - delta));
    if (pf) pf[r * L::ldp + c] = store<T>(p * f);
  }
  __syncwarp();
}

// grid (key tiles of kRows, B*NKV): dK, dV of the block's keys of one kv head, walking
// the query tiles of each query head of its group.
// Shared: K, V (kRows, ldh); Q, dO (cols, ldh); lse, D (cols); per warp f32 S^T and
// dP^T (16, lds) and 16-bit (P o F)^T and dS^T (16, ldp).
template <class T, int HDP>
static __global__ void __launch_bounds__(kFlashThreads, 2)
    flash_dkdv_kernel(T* d_qkv, const T* d_out, const T* qkv, const float* lse, const float* delta,
                      AttentionGeometry g) {
  using L = Tile<HDP>;
  STRATA_DYNAMIC_SHARED(T, smem);
  SharedPtr<T> k_s = smem;
  SharedPtr<T> v_s = k_s + kRows * L::ldh;
  SharedPtr<T> q_s = v_s + kRows * L::ldh;
  SharedPtr<T> do_s = q_s + L::cols * L::ldh;
  SharedPtr<T> pf_w = do_s + L::cols * L::ldh + threadIdx.x / 32 * 2 * 16 * L::ldp;
  SharedPtr<T> ds_w = pf_w + 16 * L::ldp;
  SharedPtr<float> lse_s = shared_cast<float>(do_s + L::cols * L::ldh + kWarps * 2 * 16 * L::ldp);
  SharedPtr<float> delta_s = lse_s + L::cols;
  SharedPtr<float> s_w = delta_s + L::cols + threadIdx.x / 32 * 2 * 16 * L::lds;
  SharedPtr<float> dp_w = s_w + 16 * L::lds;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y / g.NKV, h0 = blockIdx.y % g.NKV * g.group(), j0 = int64_t(blockIdx.x) * kRows;
  const int64_t stride = g.stride(), j = j0 + warp * 16 + lane % 16;  // j: this lane's key
  const T* row0 = qkv + b * g.T * stride;                               // qkv of (b, 0)
  load_rows<T, HDP>(k_s, row0 + g.k_at(h0), stride, j0, kRows, g);
  load_rows<T, HDP>(v_s, row0 + g.v_at(h0), stride, j0, kRows, g);
  FragC dk[L::frags], dv[L::frags];
  STRATA_UNROLL
  for (int d = 0; d < L::frags; ++d) wmma::fill_fragment(dk[d], 0.0f), wmma::fill_fragment(dv[d], 0.0f);
  SharedPtr<const T> k_w = k_s + warp * 16 * L::ldh;
  SharedPtr<const T> v_w = v_s + warp * 16 * L::ldh;
  for (int64_t h = h0; h < h0 + g.group(); ++h) {
    const int64_t bh = b * g.NH + h;
    // Causal: the first query tile holding a query >= j0.
    for (int64_t i0 = g.causal ? j0 / L::cols * L::cols : 0; i0 < g.query_end(j0 + kRows - 1); i0 += L::cols) {
      __syncthreads();
      load_rows<T, HDP>(q_s, row0 + g.q_at(h), stride, i0, L::cols, g);
      load_rows<T, HDP>(do_s, d_out + b * g.T * g.C() + h * g.HD, g.C(), i0, L::cols, g);
      for (int c = threadIdx.x; c < L::cols; c += blockDim.x) {
        const bool in = i0 + c < g.T;
        lse_s[c] = in ? lse[bh * g.T + i0 + c] : 0.0f;
        delta_s[c] = in ? delta[bh * g.T + i0 + c] : 0.0f;
      }
      __syncthreads();
      strip_scores<T, HDP>(s_w, k_w, q_s);    // S^T (16 keys, cols queries)
      strip_scores<T, HDP>(dp_w, v_w, do_s);  // dP^T = V dO^T
      __syncwarp();
      strip_grads<T, HDP>(ds_w, pf_w, s_w, dp_w, false, j, i0, 0.0f, 0.0f, lse_s, delta_s, bh, g);
      strip_accumulate<T, HDP>(dv, pf_w, do_s);  // dV += (P o F)^T dO
      strip_accumulate<T, HDP>(dk, ds_w, q_s);   // dK += dS^T Q (scaled at the end)
    }
  }
  T* d_row0 = d_qkv + b * g.T * stride;
  store_strip<T, HDP>(d_row0 + g.k_at(h0), stride, j0 + warp * 16, dk, s_w, g.scale, g);
  store_strip<T, HDP>(d_row0 + g.v_at(h0), stride, j0 + warp * 16, dv, s_w, 1.0f, g);
}

// grid (query tiles of kRows, B*NH): dQ of the block's queries, walking the key tiles.
// Shared: Q, dO (kRows, ldh); K, V (cols, ldh); per warp f32 S and dP (16, lds) and
// 16-bit dS (16, ldp).
template <class T, int HDP>
static __global__ void __launch_bounds__(kFlashThreads, 2)
    flash_dq_kernel(T* d_qkv, const T* d_out, const T* qkv, const float* lse, const float* delta,
                    AttentionGeometry g) {
  using L = Tile<HDP>;
  STRATA_DYNAMIC_SHARED(T, smem);
  SharedPtr<T> q_s = smem;
  SharedPtr<T> do_s = q_s + kRows * L::ldh;
  SharedPtr<T> k_s = do_s + kRows * L::ldh;
  SharedPtr<T> v_s = k_s + L::cols * L::ldh;
  SharedPtr<T> ds_w = v_s + L::cols * L::ldh + threadIdx.x / 32 * 16 * L::ldp;
  SharedPtr<float> s_w = shared_cast<float>(v_s + L::cols * L::ldh + kWarps * 16 * L::ldp) +
                         threadIdx.x / 32 * 2 * 16 * L::lds;
  SharedPtr<float> dp_w = s_w + 16 * L::lds;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.y, b = bh / g.NH, h = bh % g.NH, i0 = heavy_first_tile();
  const int64_t stride = g.stride(), i = i0 + warp * 16 + lane % 16;  // i: this lane's query
  const T* row0 = qkv + b * g.T * stride;                               // qkv of (b, 0)
  load_rows<T, HDP>(q_s, row0 + g.q_at(h), stride, i0, kRows, g);
  load_rows<T, HDP>(do_s, d_out + b * g.T * g.C() + h * g.HD, g.C(), i0, kRows, g);
  const float row_lse = i < g.T ? lse[bh * g.T + i] : 0.0f, row_delta = i < g.T ? delta[bh * g.T + i] : 0.0f;
  FragC dq[L::frags];
  STRATA_UNROLL
  for (int d = 0; d < L::frags; ++d) wmma::fill_fragment(dq[d], 0.0f);
  SharedPtr<const T> q_w = q_s + warp * 16 * L::ldh;
  SharedPtr<const T> do_w = do_s + warp * 16 * L::ldh;
  const int64_t key_end = g.causal ? (i0 + kRows < g.T ? i0 + kRows : g.T) : g.T;
  for (int64_t j0 = g.first_key_tile(i0, L::cols); j0 < key_end; j0 += L::cols) {
    __syncthreads();
    load_rows<T, HDP>(k_s, row0 + g.k_at(h), stride, j0, L::cols, g);
    load_rows<T, HDP>(v_s, row0 + g.v_at(h), stride, j0, L::cols, g);
    __syncthreads();
    strip_scores<T, HDP>(s_w, q_w, k_s);    // S (16 queries, cols keys)
    strip_scores<T, HDP>(dp_w, do_w, v_s);  // dP = dO V^T
    __syncwarp();
    strip_grads<T, HDP>(ds_w, nullptr, s_w, dp_w, true, i, j0, row_lse, row_delta, nullptr, nullptr, bh, g);
    strip_accumulate<T, HDP>(dq, ds_w, k_s);  // dQ += dS K (scaled at the end)
  }
  store_strip<T, HDP>(d_qkv + b * g.T * stride + g.q_at(h), stride, i0 + warp * 16, dq, s_w, g.scale, g);
}

namespace {

template <int HDP>
constexpr size_t forward_shared_bytes(size_t elem) {
  using L = Tile<HDP>;
  return (2 * L::cols + kRows) * L::ldh * elem + kWarps * 16 * L::lds * sizeof(float);
}
template <int HDP>
constexpr size_t dkdv_shared_bytes(size_t elem) {
  using L = Tile<HDP>;
  return (2 * kRows + 2 * L::cols) * L::ldh * elem + kWarps * 2 * 16 * L::ldp * elem +
         (2 * L::cols + kWarps * 2 * 16 * L::lds) * sizeof(float);
}
template <int HDP>
constexpr size_t dq_shared_bytes(size_t elem) {
  using L = Tile<HDP>;
  return (2 * kRows + 2 * L::cols) * L::ldh * elem + kWarps * 16 * L::ldp * elem +
         kWarps * 2 * 16 * L::lds * sizeof(float);
}

// Calls f(std::integral_constant<int, HDP>) for the padded head dim of g.
template <class F>
void dispatch_head_dim(const AttentionGeometry& g, F&& f) {
  if (g.HD <= 64)
    f(std::integral_constant<int, 64>());
  else
    f(std::integral_constant<int, 128>());
}

unsigned row_tiles(const AttentionGeometry& g) { return unsigned((g.T + kRows - 1) / kRows); }

}  // namespace

void attention_flash_forward(const ops::AttentionForwardArgs& a, const AttentionGeometry& g, const Context& c) {
  const dim3 grid(row_tiles(g), unsigned(g.B * g.NH));
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      dispatch_head_dim(g, [&](auto hdp) {
        constexpr int HDP = decltype(hdp)::value;
        launch(flash_forward_kernel<T, HDP>, grid, kFlashThreads, forward_shared_bytes<HDP>(sizeof(T)), c.stream,
               a.out.ptr<T>(), a.lse.ptr<float>(), static_cast<const T*>(a.qkv.ptr<T>()), g);
      });
    }
  });
}

void attention_flash_backward(const ops::AttentionBackwardArgs& a, const AttentionGeometry& g, const float* delta,
                              const Context& c) {
  const dim3 grid(row_tiles(g), unsigned(g.B * g.NH)), kv_grid(row_tiles(g), unsigned(g.B * g.NKV));
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      dispatch_head_dim(g, [&](auto hdp) {
        constexpr int HDP = decltype(hdp)::value;
        const T* d_out = a.d_out.ptr<T>();
        const T* qkv = a.qkv.ptr<T>();
        const float* lse = a.lse.ptr<float>();
        launch(flash_dkdv_kernel<T, HDP>, kv_grid, kFlashThreads, dkdv_shared_bytes<HDP>(sizeof(T)), c.stream,
               a.d_qkv.ptr<T>(), d_out, qkv, lse, delta, g);
        launch(flash_dq_kernel<T, HDP>, grid, kFlashThreads, dq_shared_bytes<HDP>(sizeof(T)), c.stream,
               a.d_qkv.ptr<T>(), d_out, qkv, lse, delta, g);
      });
    }
  });
}

}  // namespace strata::STRATA_CUDA_NS
