// Incremental inference with a KV cache: Model::decode runs new rows through the
// embedding (at their positions), each block's inference path, and the head.
// A block's inference path is its forward without dropout, saved activations or
// recompute: norm1 -> qkv -> rope (at the rows' positions) -> attention_decode
// (appends the rows' rotated k, v to the block's cache, attends over the cache) ->
// proj -> residual + norm2 -> MLP -> residual. It uses the same ops in the same order
// as BlockUnit::forward, so it differs from the full-context forward only where
// attention_decode's sums run in another order than attention_forward's.
// Left padding: row b's first starts[b] positions of the batch are padding. Its real
// tokens get model positions (embedding, RoPE) batch position - starts[b], and go
// through attention_decode row by row at those positions against the row's own cache
// slab, so padding is never cached nor attended. Every other op is row-wise, so a
// padded row computes bitwise what the row computes alone.
// Invariant: the cache holds positions [0, length - starts[b]) of row b in every
// block; a call checks everything before it enqueues anything, and advances length
// by T at the end.
#include <algorithm>

#include "block_params.h"
#include "strata/error.h"
#include "unit.h"

namespace strata {

namespace {

// Key / value heads of the cache: n_kv_heads (grouped-query attention) or n_heads.
int64_t kv_heads(const ModelConfig& c) { return c.kv_heads(); }

struct Workspace {
  TensorView x, y, ln1, qkv, att, x2, ln2, fc, act, mean, rstd, tokens, last, logits;
};

// Row b's real (non-padding) slice of a call's T new rows at batch positions
// [pos, pos + T): rows [first, T), whose model (and cache) positions start at
// `position`.
struct RealRows {
  int64_t first, position;
};
RealRows real_rows(int64_t start, int64_t pos, int64_t T) {
  const int64_t first = std::min(T, std::max<int64_t>(0, start - pos));
  return {first, pos + first - start};
}

// Rows [first, T) of row b of a (B, T, ...) view, as a (1, T - first, ...) view.
TensorView row_slice(const TensorView& t, int64_t b, int64_t first) {
  const int64_t T = t.shape[1], per_row = t.numel() / (t.shape[0] * T);
  TensorView r = t;
  r.data = static_cast<char*>(t.data) + size_t((b * T + first) * per_row) * dtype_size(t.dtype);
  r.shape[0] = 1;
  r.shape[1] = T - first;
  return r;
}

size_t workspace_bytes(const ModelConfig& c, DType dt, int64_t B, int64_t rows, int64_t nkv) {
  const int64_t C = c.d_model, fc_out = c.mlp == MlpKind::swiglu ? 2 * c.d_mlp : c.d_mlp;
  return 5 * carve_bytes(dt, rows * C) + carve_bytes(dt, rows * c.attention_width()) + carve_bytes(dt, rows * (c.n_heads + 2 * nkv) * c.head_dim()) +
         carve_bytes(dt, rows * fc_out) + carve_bytes(dt, rows * c.d_mlp) + 2 * carve_bytes(DType::f32, rows) +
         carve_bytes(DType::i32, rows) + carve_bytes(dt, B * C) + carve_bytes(DType::f32, B * c.vocab_size);
}

Workspace carve_workspace(const ModelConfig& c, DType dt, int64_t B, int64_t T, int64_t nkv, void* base,
                          Device* device) {
  const int64_t rows = B * T, C = c.d_model, fc_out = c.mlp == MlpKind::swiglu ? 2 * c.d_mlp : c.d_mlp;
  char* cur = static_cast<char*>(base);
  Workspace w;
  w.x = carve(cur, dt, {B, T, C});
  w.y = carve(cur, dt, {B, T, C});
  w.ln1 = carve(cur, dt, {rows, C});
  w.att = carve(cur, dt, {rows, c.attention_width()});
  w.x2 = carve(cur, dt, {rows, C});
  w.ln2 = carve(cur, dt, {rows, C});
  w.qkv = carve(cur, dt, {rows, (c.n_heads + 2 * nkv) * c.head_dim()});
  w.fc = carve(cur, dt, {rows, fc_out});
  w.act = carve(cur, dt, {rows, c.d_mlp});
  w.mean = carve(cur, DType::f32, {rows});
  w.rstd = carve(cur, DType::f32, {rows});
  w.tokens = carve(cur, DType::i32, {B, T});
  w.last = carve(cur, dt, {B, C});
  w.logits = carve(cur, DType::f32, {B, c.vocab_size});
  for (TensorView* t : {&w.x, &w.y, &w.ln1, &w.qkv, &w.att, &w.x2, &w.ln2, &w.fc, &w.act, &w.mean, &w.rstd,
                        &w.tokens, &w.last, &w.logits})
    t->device = device;
  return w;
}

// One block over the rows w.x at batch positions [pos, pos + T), writing w.y.
// `adapter` (LoRA, or null) runs after each targeted matmul, as in the block's forward.
// `starts`: each row's padding (empty: none).
void block_decode(const UnitContext& ctx, const UnitParams& p, const Workspace& w, const TensorView& k_cache,
                  const TensorView& v_cache, int64_t nkv, LinearAdapter* adapter, int layer,
                  const std::vector<int32_t>& starts) {
  const ModelConfig& c = ctx.config;
  const auto& P = p.params;
  Stream& s = ctx.stream;
  const bool rms = c.norm == NormKind::rmsnorm;
  const int64_t rows = ctx.rows(), C = c.d_model, NH = c.n_heads, HD = c.head_dim();
  const TensorView x = w.x.reshape({rows, C}), y = w.y.reshape({rows, C});
  ops::norm_forward({w.ln1, rms ? TensorView{} : w.mean, w.rstd, x, P[kLn1W], P[kLn1B], c.norm_eps, rms}, s);
  ops::matmul_forward({w.qkv, w.ln1, P[kQkvW], P[kQkvB]}, s);
  if (adapter) adapter->forward(ctx, layer, 0, w.ln1, w.qkv);
  if (c.positions == PositionKind::rope) {
    TensorView heads = w.qkv.reshape({ctx.B, ctx.T, NH + 2 * nkv, HD});
    const RopeScalingArgs scaling = rope_scaling_args(c.rope_scaling);
    if (starts.empty()) {
      ops::rope_forward({heads, heads, NH + nkv, c.rope_theta, ctx.pos_offset, scaling}, s);
    } else {  // per row at its own positions; padding stays unrotated (never attended)
      for (int64_t b = 0; b < ctx.B; ++b) {
        const RealRows r = real_rows(starts[size_t(b)], ctx.pos_offset, ctx.T);
        if (r.first == ctx.T) continue;
        TensorView row = row_slice(heads, b, r.first);
        ops::rope_forward({row, row, NH + nkv, c.rope_theta, r.position, scaling}, s);
      }
    }
  }
  const TensorView att = w.att.reshape({ctx.B, ctx.T, NH, HD});
  const TensorView qkv = w.qkv.reshape({ctx.B, ctx.T, (NH + 2 * nkv) * HD});
  if (starts.empty()) {
    ops::attention_decode({att, qkv, k_cache, v_cache, NH, ctx.pos_offset, c.sliding_window}, s);
  } else {  // row by row: its real rows only, against its own cache slab at its own positions
    for (int64_t b = 0; b < ctx.B; ++b) {
      const RealRows r = real_rows(starts[size_t(b)], ctx.pos_offset, ctx.T);
      if (r.first == ctx.T) continue;
      ops::attention_decode({row_slice(att, b, r.first), row_slice(qkv, b, r.first), k_cache.slice_rows(b, b + 1),
                             v_cache.slice_rows(b, b + 1), NH, r.position, c.sliding_window},
                            s);
    }
  }
  ops::matmul_forward({w.x2, w.att, P[kProjW], P[kProjB]}, s);
  if (adapter) adapter->forward(ctx, layer, 1, w.att, w.x2);
  ops::residual_norm_forward(
      {w.x2, w.ln2, rms ? TensorView{} : w.mean, w.rstd, x, w.x2, P[kLn2W], P[kLn2B], c.norm_eps, rms}, s);
  if (c.mlp == MlpKind::gelu && !adapter) {  // the GELU epilogue, as the block's forward uses it
    ops::matmul_forward({w.act, w.ln2, P[kFcW], P[kFcB], w.fc}, s);
  } else {
    ops::matmul_forward({w.fc, w.ln2, P[kFcW], P[kFcB]}, s);
    if (adapter) adapter->forward(ctx, layer, 2, w.ln2, w.fc);
    if (c.mlp == MlpKind::swiglu)
      ops::swiglu_forward({w.act, w.fc}, s);
    else
      ops::gelu_forward({w.act, w.fc}, s);
  }
  ops::matmul_forward({y, w.act, P[kFc2W], P[kFc2B]}, s);
  if (adapter) adapter->forward(ctx, layer, 3, w.act, y);
  ops::add({y, w.x2, y}, s);
}

}  // namespace

KvCache::KvCache(const Model& model, int64_t batch, int64_t capacity, std::vector<int32_t> starts) {
  const ModelConfig& c = model.config();
  if (capacity == 0) capacity = c.max_seq;
  STRATA_CHECK(batch >= 1, "KvCache: batch " << batch << " must be at least 1");
  STRATA_CHECK(capacity >= 1 && capacity <= c.max_seq,
               "KvCache: capacity " << capacity << " must be in [1, max_seq = " << c.max_seq
                                    << "]; the model has no positions past max_seq");
  STRATA_CHECK(starts.empty() || int64_t(starts.size()) == batch,
               "KvCache: " << starts.size() << " padding starts for a batch of " << batch
                           << "; give one per row, or none for no padding");
  for (size_t b = 0; b < starts.size(); ++b)
    STRATA_CHECK(starts[b] >= 0 && starts[b] < capacity,
                 "KvCache: row " << b << " starts at " << starts[b] << ", outside the cache's [0, " << capacity
                                 << ") positions; a row's padding must leave room for its tokens");
  starts_ = std::move(starts);
  batch_ = batch;
  capacity_ = capacity;
  kv_heads_ = kv_heads(c);
  const size_t bytes = size_t(c.n_layers * batch * kv_heads_ * capacity * c.head_dim()) *
                       dtype_size(precision_dtype(model.precision()));
  keys_ = Buffer(model.device(), bytes, "KV cache keys");
  values_ = Buffer(model.device(), bytes, "KV cache values");
}

std::vector<float> Model::decode(const TensorView& tokens, KvCache& cache) {
  require_lm_head(*units_.back());
  check_batch(Batch{tokens, {}});
  const int64_t B = tokens.shape[0], T = tokens.shape[1], pos = cache.length_;
  STRATA_CHECK(B == cache.batch_, "Model::decode: " << B << " rows of tokens for a KV cache of batch " << cache.batch_
                                                    << "; make the cache with the batch you decode");
  STRATA_CHECK(pos + T <= cache.capacity_,
               "Model::decode: " << T << " new positions after " << pos << " cached ones exceed the cache's capacity "
                                 << cache.capacity_ << " (max_seq " << config_.max_seq
                                 << "); shorten the prompt or generate fewer tokens");
  STRATA_CHECK(cache.keys_.device() == device_, "Model::decode: the KV cache was made for another model's device");
  const DType dt = precision_dtype(precision_);
  const size_t need = workspace_bytes(config_, dt, B, B * T, cache.kv_heads_);
  if (cache.work_.size() < need) cache.work_ = Buffer(*device_, need, "decoding workspace");
  const int head = num_units() - 1;
  units_[0]->reserve(*device_, dt, B, T);     // the sinusoid table, if any
  units_[size_t(head)]->reserve(*device_, dt, B, 1);  // the head's logits rows
  if (adapter_) adapter_->reserve(*device_, dt, B, T);
  Workspace w = carve_workspace(config_, dt, B, T, cache.kv_heads_, cache.work_.data(), device_);
  Stream& s = device_->stream();
  s.copy(w.tokens.data, tokens.data, size_t(B * T) * 4);  // tokens are host memory

  const std::vector<int32_t>& starts = cache.starts_;

  UnitContext ctx{s, config_, dt, 0, B, T, StepKey{}, false, pos};
  UnitIO io;
  io.tokens = w.tokens;
  io.y = w.x;
  const UnitParams embedding = acquire(0, false);
  units_[0]->forward(ctx, embedding, io);
  for (int64_t b = 0; b < int64_t(starts.size()); ++b) {  // padded rows again, at their own positions
    const RealRows r = real_rows(starts[size_t(b)], pos, T);
    if (r.first == T || r.position == pos + r.first) continue;
    UnitContext row_ctx{s, config_, dt, 0, 1, T - r.first, StepKey{}, false, r.position};
    UnitIO row_io;
    row_io.tokens = row_slice(w.tokens, b, r.first);
    row_io.y = row_slice(w.x, b, r.first);
    units_[0]->forward(row_ctx, embedding, row_io);
  }
  release(0, false);
  const int64_t HD = config_.head_dim(), layer_elems = B * cache.kv_heads_ * cache.capacity_ * HD;
  for (int l = 0; l < config_.n_layers; ++l) {
    const int u = 1 + l;
    ctx.unit_index = u;
    const size_t at = size_t(l * layer_elems) * dtype_size(dt);
    const TensorView kc(static_cast<char*>(cache.keys_.data()) + at, dt, {B, cache.kv_heads_, cache.capacity_, HD},
                        device_);
    const TensorView vc(static_cast<char*>(cache.values_.data()) + at, dt, {B, cache.kv_heads_, cache.capacity_, HD},
                        device_);
    block_decode(ctx, acquire(u, false), w, kc, vc, cache.kv_heads_, adapter_, l, starts);
    release(u, false);
    std::swap(w.x, w.y);
  }
  // Each row's last position, then the head.
  const size_t row_bytes = size_t(config_.d_model) * dtype_size(dt);
  for (int64_t b = 0; b < B; ++b)
    s.copy(static_cast<char*>(w.last.data) + size_t(b) * row_bytes,
           static_cast<const char*>(w.x.data) + size_t(b * T + T - 1) * row_bytes, row_bytes);
  UnitContext hctx{s, config_, dt, head, B, 1, StepKey{}, false, pos};
  head_logits(*units_[size_t(head)], hctx, acquire(head, false), w.last, w.logits);
  release(head, false);
  std::vector<float> logits(size_t(B * config_.vocab_size));
  s.copy(logits.data(), w.logits.data, logits.size() * 4);
  s.synchronize();
  cache.length_ = pos + T;
  have_saved_ = false;
  return logits;
}

}  // namespace strata
