// CUDA multi-head / grouped-query attention over packed qkv (B, T, (NH + 2*NKV)*HD):
// the op's launchers, and
// the FMA path, a tiled memory-efficient forward and backward that never stores the
// T x T matrix (f32 storage, and head_dim > kFlashMaxHeadDim; bf16 / fp16 go to the
// tensor-core path in attention_flash.cu).
// A block owns one head (b, h) and one tile of `tile` query rows (forward, dQ), or one kv
// head and a tile of key rows (dK, dV, summed over the group's query heads in order),
// and walks the other side in tiles through shared memory; forward
// keeps a running max / sum per row (online softmax).
// Invariants: storage is f32 / bf16 / f16, all math f32; lse is the log-sum-exp of the
// un-dropped scaled scores; the dropout mask is num::philox_uniform(dropout_key,
// ((b*NH + h)*T + i)*T + j) >= p, the CPU backend's, so backward replays it. d_qkv is
// assigned and deterministic: dK/dV and dQ come from two kernels that each own their
// output rows (dQ recomputes the scores instead of adding with float atomics).
// Shared (tile, HD) tiles have row stride HD + 1 (odd), so lanes reading different rows
// of K hit different banks; every lane of a loop makes the same shared accesses (reads
// before masks), so the emulator's bank-conflict report lines up warp instructions.
#include "attention.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
constexpr int kAttnThreads = 128;

struct Geometry : AttentionGeometry {
  int tile;  // rows per tile: 32, or 16 for very wide heads (shared memory)
  STRATA_HD int64_t ld() const { return HD + 1; }  // row stride of a (tile, HD) shared tile
};
}  // namespace

// dst (tile, ld) f32 <- rows [row0, row0 + tile) of src (row stride `stride`), 0 past T.
template <class T>
static __device__ void load_tile(SharedPtr<float> dst, const T* src, int64_t stride, int64_t row0, const Geometry& g) {
  for (int64_t e = threadIdx.x; e < int64_t(g.tile) * g.HD; e += blockDim.x) {
    const int64_t r = e / g.HD, d = e % g.HD;
    dst[r * g.ld() + d] = row0 + r < g.T ? load(src[(row0 + r) * stride + d]) : 0.0f;
  }
}

static __device__ float dot_rows(SharedPtr<const float> a, SharedPtr<const float> b, int64_t hd) {
  float s = 0.0f;
  for (int64_t d = 0; d < hd; ++d) s += a[d] * b[d];
  return s;
}

// grid (query tiles, B*NH). Shared: Q, K, V, O (tile, HD); S (tile, tile+1); m, l, alpha (tile).
template <class T>
static __global__ void attention_forward_kernel(T* out, float* lse, const T* qkv, Geometry g) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int tile = g.tile, sp = tile + 1;
  const int64_t hd = g.HD, bh = blockIdx.y, b = bh / g.NH, h = bh % g.NH, i0 = int64_t(blockIdx.x) * tile;
  const int64_t ld = g.ld();
  SharedPtr<float> q = smem, k = q + tile * ld, v = k + tile * ld, o = v + tile * ld, s = o + tile * ld;
  SharedPtr<float> m = s + tile * sp, l = m + tile, alpha = l + tile;
  const int64_t stride = g.stride();
  const T* row0 = qkv + b * g.T * stride;  // qkv of (b, 0)
  load_tile(q, row0 + g.q_at(h), stride, i0, g);
  for (int64_t e = threadIdx.x; e < tile * ld; e += blockDim.x) o[e] = 0.0f;
  for (int r = threadIdx.x; r < tile; r += blockDim.x) m[r] = -INFINITY, l[r] = 0.0f;
  const int64_t key_end = g.causal ? (i0 + tile < g.T ? i0 + tile : g.T) : g.T;
  for (int64_t j0 = g.first_key_tile(i0, tile); j0 < key_end; j0 += tile) {
    __syncthreads();  // the previous K, V tile is consumed
    load_tile(k, row0 + g.k_at(h), stride, j0, g);
    load_tile(v, row0 + g.v_at(h), stride, j0, g);
    __syncthreads();
    for (int e = threadIdx.x; e < tile * tile; e += blockDim.x) {
      const int r = e / tile, c = e % tile;
      const int64_t i = i0 + r, j = j0 + c;
      const bool masked = j >= g.T || !g.sees(i, j);
      const float dot = dot_rows(q + r * ld, k + c * ld, hd);  // every lane reads alike (see top)
      s[r * sp + c] = masked ? -INFINITY : dot * g.scale;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < tile; r += blockDim.x) {  // online softmax, one row per thread
      SharedPtr<float> row = s + r * sp;
      float mx = m[r];
      for (int c = 0; c < tile; ++c) mx = fmaxf(mx, row[c]);
      if (mx == -INFINITY) {  // nothing visible yet (rows past T): keep the state
        alpha[r] = 1.0f;
        for (int c = 0; c < tile; ++c) row[c] = 0.0f;
        continue;
      }
      float sum = 0.0f;
      for (int c = 0; c < tile; ++c) {
        const float p = expf(row[c] - mx);
        sum += p;
        row[c] = p * attention_dropout(g, bh, i0 + r, j0 + c);
      }
      alpha[r] = expf(m[r] - mx);
      l[r] = l[r] * alpha[r] + sum;
      m[r] = mx;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tile * hd; e += blockDim.x) {
      const int64_t r = e / hd, d = e % hd;
      float acc = o[r * ld + d] * alpha[r];
      for (int c = 0; c < tile; ++c) acc += s[r * sp + c] * v[c * ld + d];
      o[r * ld + d] = acc;
    }
  }
  __syncthreads();
  T* out_head = out + b * g.T * g.C() + h * hd;  // row stride C
  for (int64_t e = threadIdx.x; e < tile * hd; e += blockDim.x) {
    const int64_t r = e / hd, d = e % hd;
    const float v = o[r * ld + d] / l[r];
    if (i0 + r < g.T) out_head[(i0 + r) * g.C() + d] = store<T>(v);
  }
  for (int r = threadIdx.x; r < tile; r += blockDim.x)
    if (i0 + r < g.T) lse[bh * g.T + i0 + r] = m[r] + logf(l[r]);
}

// The (tile x tile) block of P o F (into pf, may be null) and dS = P o (dP o F - D)
// for query rows i0.. and key rows j0.. held in shared memory.
static __device__ void score_grads(SharedPtr<float> pf, SharedPtr<float> ds, SharedPtr<const float> q,
                                   SharedPtr<const float> k, SharedPtr<const float> v, SharedPtr<const float> d_o,
                                   SharedPtr<const float> lse_t, SharedPtr<const float> delta_t, int64_t bh,
                                   int64_t i0, int64_t j0, const Geometry& g) {
  const int tile = g.tile, sp = tile + 1;
  const int64_t hd = g.HD, ld = g.ld();
  for (int e = threadIdx.x; e < tile * tile; e += blockDim.x) {
    const int r = e / tile, c = e % tile;
    const int64_t i = i0 + r, j = j0 + c;
    const bool valid = i < g.T && j < g.T && g.sees(i, j);
    const float score = dot_rows(q + r * ld, k + c * ld, hd) * g.scale - lse_t[r];
    const float dot = dot_rows(d_o + r * ld, v + c * ld, hd);
    float p = 0.0f, dp = 0.0f, f = 1.0f;
    if (valid) p = expf(score), dp = dot, f = attention_dropout(g, bh, i, j);
    ds[r * sp + c] = p * (dp * f - delta_t[r]);
    if (pf) pf[r * sp + c] = p * f;
  }
}

// Loads lse and D of query rows i0 .. i0 + tile (0 past T).
static __device__ void load_row_stats(SharedPtr<float> lse_t, SharedPtr<float> delta_t, const float* lse, const float* delta, int64_t bh,
                                      int64_t i0, const Geometry& g) {
  for (int r = threadIdx.x; r < g.tile; r += blockDim.x) {
    const bool in = i0 + r < g.T;
    lse_t[r] = in ? lse[bh * g.T + i0 + r] : 0.0f;
    delta_t[r] = in ? delta[bh * g.T + i0 + r] : 0.0f;
  }
}

// grid (key tiles, B*NKV): dK, dV of the block's key rows of one kv head, walking every
// query tile of each query head of its group.
// Shared: K, V, dK, dV, Q, dO (tile, HD); PF, dS (tile, tile+1); lse, D (tile).
template <class T>
static __global__ void attention_dkdv_kernel(T* d_qkv, const T* d_out, const T* qkv, const float* lse,
                                             const float* delta, Geometry g) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int tile = g.tile, sp = tile + 1;
  const int64_t hd = g.HD, b = blockIdx.y / g.NKV, h0 = blockIdx.y % g.NKV * g.group();
  const int64_t j0 = int64_t(blockIdx.x) * tile;
  const int64_t ld = g.ld();
  SharedPtr<float> k = smem, v = k + tile * ld, dk = v + tile * ld, dv = dk + tile * ld, q = dv + tile * ld;
  SharedPtr<float> d_o = q + tile * ld, pf = d_o + tile * ld, ds = pf + tile * sp, lse_t = ds + tile * sp;
  SharedPtr<float> delta_t = lse_t + tile;
  const int64_t stride = g.stride();
  const T* row0 = qkv + b * g.T * stride;  // qkv of (b, 0)
  load_tile(k, row0 + g.k_at(h0), stride, j0, g);
  load_tile(v, row0 + g.v_at(h0), stride, j0, g);
  for (int64_t e = threadIdx.x; e < tile * ld; e += blockDim.x) dk[e] = 0.0f, dv[e] = 0.0f;
  for (int64_t h = h0; h < h0 + g.group(); ++h) {
    for (int64_t i0 = g.causal ? j0 : 0; i0 < g.query_end(j0 + tile - 1); i0 += tile) {
      const int64_t bh = b * g.NH + h;
      __syncthreads();
      load_tile(q, row0 + g.q_at(h), stride, i0, g);
      load_tile(d_o, d_out + b * g.T * g.C() + h * hd, g.C(), i0, g);
      load_row_stats(lse_t, delta_t, lse, delta, bh, i0, g);
      __syncthreads();
      score_grads(pf, ds, q, k, v, d_o, lse_t, delta_t, bh, i0, j0, g);
      __syncthreads();
      for (int64_t e = threadIdx.x; e < tile * hd; e += blockDim.x) {
        const int64_t c = e / hd, d = e % hd;
        float acc_v = 0.0f, acc_k = 0.0f;
        for (int r = 0; r < tile; ++r) {
          acc_v += pf[r * sp + c] * d_o[r * ld + d];
          acc_k += ds[r * sp + c] * q[r * ld + d];
        }
        dv[c * ld + d] += acc_v;
        dk[c * ld + d] += acc_k * g.scale;
      }
    }
  }
  __syncthreads();
  T* d_row0 = d_qkv + b * g.T * stride;
  for (int64_t e = threadIdx.x; e < tile * hd; e += blockDim.x) {
    const int64_t c = e / hd, d = e % hd;
    const float dk_cd = dk[c * ld + d], dv_cd = dv[c * ld + d];
    if (j0 + c >= g.T) continue;
    d_row0[(j0 + c) * stride + g.k_at(h0) + d] = store<T>(dk_cd);
    d_row0[(j0 + c) * stride + g.v_at(h0) + d] = store<T>(dv_cd);
  }
}

// grid (query tiles, B*NH): dQ of the block's query rows, walking the key tiles.
// Shared: Q, dO, K, V, dQ (tile, HD); dS (tile, tile+1); lse, D (tile).
template <class T>
static __global__ void attention_dq_kernel(T* d_qkv, const T* d_out, const T* qkv, const float* lse,
                                           const float* delta, Geometry g) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int tile = g.tile, sp = tile + 1;
  const int64_t hd = g.HD, bh = blockIdx.y, b = bh / g.NH, h = bh % g.NH, i0 = int64_t(blockIdx.x) * tile;
  const int64_t ld = g.ld();
  SharedPtr<float> q = smem, d_o = q + tile * ld, k = d_o + tile * ld, v = k + tile * ld, dq = v + tile * ld;
  SharedPtr<float> ds = dq + tile * ld, lse_t = ds + tile * sp, delta_t = lse_t + tile;
  const int64_t stride = g.stride();
  const T* row0 = qkv + b * g.T * stride;  // qkv of (b, 0)
  load_tile(q, row0 + g.q_at(h), stride, i0, g);
  load_tile(d_o, d_out + b * g.T * g.C() + h * hd, g.C(), i0, g);
  load_row_stats(lse_t, delta_t, lse, delta, bh, i0, g);
  for (int64_t e = threadIdx.x; e < tile * ld; e += blockDim.x) dq[e] = 0.0f;
  const int64_t key_end = g.causal ? (i0 + tile < g.T ? i0 + tile : g.T) : g.T;
  for (int64_t j0 = g.first_key_tile(i0, tile); j0 < key_end; j0 += tile) {
    __syncthreads();
    load_tile(k, row0 + g.k_at(h), stride, j0, g);
    load_tile(v, row0 + g.v_at(h), stride, j0, g);
    __syncthreads();
    score_grads(nullptr, ds, q, k, v, d_o, lse_t, delta_t, bh, i0, j0, g);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tile * hd; e += blockDim.x) {
      const int64_t r = e / hd, d = e % hd;
      float acc = 0.0f;
      for (int c = 0; c < tile; ++c) acc += ds[r * sp + c] * k[c * ld + d];
      dq[r * ld + d] += acc * g.scale;
    }
  }
  __syncthreads();
  T* d_head = d_qkv + b * g.T * stride + g.q_at(h);
  for (int64_t e = threadIdx.x; e < tile * hd; e += blockDim.x) {
    const int64_t r = e / hd, d = e % hd;
    const float v = dq[r * ld + d];
    if (i0 + r < g.T) d_head[(i0 + r) * stride + d] = store<T>(v);
  }
}

namespace {
Geometry geometry(const AttentionGeometry& base) {
  Geometry g{base, 32};
  if (g.HD > 128) g.tile = 16;  // keeps the backward's six (tile, HD) tiles in shared memory
  return g;
}

unsigned tiles(const Geometry& g) { return unsigned((g.T + g.tile - 1) / g.tile); }

size_t shared_floats(const Geometry& g, int row_tiles, int score_tiles) {
  return size_t(row_tiles) * g.tile * g.ld() + size_t(score_tiles) * g.tile * (g.tile + 1) + 3 * g.tile;
}
}  // namespace

void attention_forward(const ops::AttentionForwardArgs& a, const Context& c) {
  const AttentionGeometry base = attention_geometry(a.qkv, a.n_heads, a.n_kv_heads, a.causal, a.dropout,
                                                    a.dropout_key, a.window);
  if (attention_flash_supports(a.qkv.dtype, base.HD)) return attention_flash_forward(a, base, c);
  const Geometry g = geometry(base);
  const dim3 grid(tiles(g), unsigned(g.B * g.NH));
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(attention_forward_kernel<T>, grid, kAttnThreads, shared_floats(g, 4, 1) * sizeof(float), c.stream,
           a.out.ptr<T>(), a.lse.ptr<float>(), static_cast<const T*>(a.qkv.ptr<T>()), g);
  });
}

void attention_backward(const ops::AttentionBackwardArgs& a, const Context& c) {
  const AttentionGeometry base = attention_geometry(a.qkv, a.n_heads, a.n_kv_heads, a.causal, a.dropout,
                                                    a.dropout_key, a.window);
  const Geometry g = geometry(base);
  float* delta = static_cast<float*>(c.scratch->get(size_t(g.B * g.NH * g.T) * sizeof(float)));  // (B, NH, T)
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(attention_delta_kernel<T>, blocks_for(g.B * g.NH * g.T, kThreads), kThreads, 0, c.stream, delta,
           static_cast<const T*>(a.d_out.ptr<T>()), static_cast<const T*>(a.out.ptr<T>()), base);
  });
  if (attention_flash_supports(a.qkv.dtype, base.HD)) return attention_flash_backward(a, base, delta, c);
  const dim3 grid(tiles(g), unsigned(g.B * g.NH)), kv_grid(tiles(g), unsigned(g.B * g.NKV));
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* d_out = a.d_out.ptr<T>();
    const T* qkv = a.qkv.ptr<T>();
    launch(attention_dkdv_kernel<T>, kv_grid, kAttnThreads, shared_floats(g, 6, 2) * sizeof(float), c.stream,
           a.d_qkv.ptr<T>(), d_out, qkv, static_cast<const float*>(a.lse.ptr<float>()),
           static_cast<const float*>(delta), g);
    launch(attention_dq_kernel<T>, grid, kAttnThreads, shared_floats(g, 5, 1) * sizeof(float), c.stream,
           a.d_qkv.ptr<T>(), d_out, qkv, static_cast<const float*>(a.lse.ptr<float>()),
           static_cast<const float*>(delta), g);
  });
}

}  // namespace strata::STRATA_CUDA_NS
