// The unit interface, public: the grain of everything that moves in strata, and the
// way a program adds its own layer without editing the library. A unit declares its
// parameters (the Model lays them out in one flat buffer per unit and initialises
// them), keeps what its backward needs in buffers it reserves for a batch shape, and
// takes backward scratch from a region the Model shares between all units. Units
// compute only with the ops of strata/ops.h, so every backend runs them.
//
// Invariants a unit must keep (strata/gradcheck.h checks them in one call):
//   - parameter gradients ACCUMULATE (+=) into the f32 grad views of UnitParams;
//   - activation gradients (io.dx) are ASSIGNED (=): whatever dx held is overwritten;
//   - forward and backward never allocate: reserve() sizes every buffer for (B, T)
//     first; backward scratch is io's `scratch` (scratch_bytes), recomputed
//     activations live in io.transient (transient_bytes);
//   - a forward replayed with the same context (same StepKey, so the same dropout
//     masks) gives the same bits: recompute and offload rely on it.
// The engine (store, ZeRO, offload, checkpoints, optimizer) knows a unit only by its
// specs: what a parameter is comes from its role, never from its name or position.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "strata/model.h"
#include "strata/ops.h"

namespace strata {

struct ParamSpec {
  enum class Init : uint8_t { normal, ones, zeros };
  std::string name;  // relative to the unit: "attn.qkv.weight"; "" with an empty shape keeps a slot absent
  std::vector<int64_t> shape;
  Init init = Init::normal;
  float std = 0.02f;  // of Init::normal
  ParamRole role = ParamRole::matrix;  // weight decay, LoRA's frozen norms (see ParamRole)
};

// Dropout sites of the built-in units. Sites are local to a unit (the unit index is
// part of the key), so a custom unit numbers its own from 0; at most 16 per unit.
enum DropoutSite : uint32_t { kSiteEmbedding = 0, kSiteAttention = 1, kSiteAttnResidual = 2, kSiteMlpResidual = 3 };

struct UnitContext {
  Stream& stream;
  const ModelConfig& config;
  DType dtype;  // working params and activations
  int unit_index;
  int64_t B, T;
  StepKey key;
  bool train;
  int64_t pos_offset = 0;  // position of row 0 (incremental decoding); 0 in training

  int64_t rows() const { return B * T; }
  // The Philox key of dropout site `site` (< 16) of this unit in this micro-step.
  num::RandomKey dropout_key(uint32_t site) const;
};

// Parameter and gradient views of one unit, in param_specs() order (absent slots are
// undefined views), followed by the views it borrows from other units (tied
// embeddings). grads are f32; a grad view may be undefined (frozen base under LoRA):
// skip that gradient.
struct UnitParams {
  std::vector<TensorView> params;
  std::vector<TensorView> grads;
};

// What flows into and out of a unit. The first unit of a Model reads tokens and
// writes y; the middle units read x and write y, all (B, T, d_model) in the working
// dtype; the last reads x and targets and writes per-token losses. Unused fields stay
// undefined.
struct UnitIO {
  TensorView tokens;   // (B, T) i32       first unit's input
  TensorView targets;  // (B, T) i32       last unit's input
  TensorView x;        // (B, T, C)        input of every unit but the first
  TensorView y;        // (B, T, C)        output of every unit but the last
  TensorView losses;   // (B*T) f32        last unit's output: per-token loss
  TensorView dy;       // (B, T, C)        gradient of y (the unit may overwrite it)
  TensorView dx;       // (B, T, C)        gradient of x (assigned)
  float d_loss = 0.0f;  // last unit: gradient of the total loss w.r.t. each token's loss
  void* transient = nullptr;  // shared workspace for what the unit recomputes
  // Named side activations (Unit::reads()): side[i] is the activation reads()[i] names,
  // (B, T, C) in the working dtype, valid through backward; a unit ADDS (+=) its
  // gradient into d_side[i], since several units may read one activation.
  std::vector<TensorView> side;
  std::vector<TensorView> d_side;
};

// A linear layer a unit offers to LoRA (strata/lora.h): `param` is the local name of
// its (out, in) matrix ParamSpec, `id` the site number the unit passes to
// LinearAdapter (in [0, 16), unique within the unit), `name` what LoraOptions::sites
// selects it by. The built-in block declares qkv 0, attn_proj 1, fc 2, mlp_proj 3.
struct AdapterSite {
  std::string name;
  std::string param;
  int id;
};

// A trainable side path on a unit's linear layers (LoRA, strata/lora.h). A unit
// calls forward right after the targeted matmul's forward (y += delta(x)) and
// backward right after its matmul_backward (d_inp += d delta/dx, own grads +=),
// with `site` the AdapterSite id. Adapters are found by (ctx.unit_index, site);
// `layer` is the unit's own tag (the built-in block passes its layer), unused by Lora.
class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  virtual void reserve(Device& device, DType dtype, int64_t B, int64_t T) = 0;
  virtual void forward(const UnitContext& ctx, int layer, int site, const TensorView& x, const TensorView& y) = 0;
  virtual void backward(const UnitContext& ctx, int layer, int site, const TensorView& x, const TensorView& d_out,
                        const TensorView& d_inp) = 0;
};

class Unit {
 public:
  virtual ~Unit() = default;
  // Unique within a Model; parameter names are "<name>.<spec name>".
  virtual std::string name() const = 0;
  virtual std::vector<ParamSpec> param_specs() const = 0;
  // Full names of parameters of other units this unit uses ("embedding.wte.weight").
  virtual std::vector<std::string> borrowed() const { return {}; }

  // Sizes saved activations for batches up to (B, T); called before every forward
  // with the batch's shape, so it may keep buffers it already has.
  virtual void reserve(Device& device, DType dtype, int64_t B, int64_t T) = 0;
  // What the unit keeps for backward and what it recomputes there. Units that do
  // not support a mode keep everything.
  virtual void set_recompute(Recompute /*mode*/) {}
  // Units with linear layers declare them and run the adapter (null: none) on them.
  virtual std::vector<AdapterSite> adapter_sites() const { return {}; }
  virtual void set_adapter(LinearAdapter* /*adapter*/) {}
  // Bytes of the workspace shared by all units for activations they recompute:
  // valid from a unit's forward (or recompute) until the next unit's.
  virtual size_t transient_bytes(DType /*dtype*/, int64_t /*B*/, int64_t /*T*/) const { return 0; }
  // Bytes of backward scratch needed for `rows` rows.
  virtual size_t scratch_bytes(DType dtype, int64_t rows) const = 0;
  virtual void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) = 0;
  virtual void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) = 0;

  // The last unit only: checks a batch's targets ((B, T) i32, host memory) before
  // anything runs, throwing strata::Error that names the first bad one. The default
  // is the LM head's rule: each is -100 or a token id below config.vocab_size.
  virtual void check_targets(const TensorView& targets, const ModelConfig& config) const;

  // ---- Named activations (side inputs). The defaults are the sequential trunk.
  // The batch input the unit reads into io.tokens instead of the stream io.x: ""
  // reads the stream (unit 0 reads Batch::inputs), "tokens" is Batch::inputs, any
  // other name one of Batch::extra. A unit that reads a batch input starts a new
  // stream: the unit before it gets no gradient through io.x (only through what it
  // publishes).
  virtual std::string batch_input() const { return {}; }
  // Names of activations earlier units publish, handed over in io.side in this order.
  virtual std::vector<std::string> reads() const { return {}; }
  // The name this unit's output y is published under for later units ("" none).
  virtual std::string publishes() const { return {}; }
};

// ---- Side inputs and cross-attention (encoder-decoder models; docs/custom_units.md).
// How a wrapped unit is wired into a Model: its name and what it reads and publishes.
struct UnitWiring {
  std::string name;         // the unit's name in the Model ("" keeps its own)
  std::string batch_input;  // as Unit::batch_input
  std::string publishes;    // as Unit::publishes
};
// `unit` under `wiring`, everything else forwarded: an encoder built from the built-in
// units ("encoder.embedding" reading the batch input "source", blocks of a
// causal = false config, the last one publishing "memory").
std::unique_ptr<Unit> make_wired_unit(std::unique_ptr<Unit> unit, const UnitWiring& wiring);
// Pre-norm cross-attention, named "cross.<layer>", reading the activation `memory`
// (B, T, C) published by an earlier unit (an encoder's output):
//   y = x + proj(attention(q = LN_q(x) Wq, [k v] = LN_m(memory) Wkv))
// non-causal, config.n_heads query heads over config.kv_heads() key/value heads, no
// bias on q and kv (proj has one when config.bias). The memory has the decoder's
// length T (pad the shorter sequence). Full recompute replays the attention.
std::unique_ptr<Unit> make_cross_attention_unit(const ModelConfig& config, int layer, const std::string& memory);

// The built-in units, as the GPT-2 / LLaMA builder composes them:
// embedding, n_layers blocks, final norm + LM head (+ cross-entropy).
std::unique_ptr<Unit> make_embedding_unit(const ModelConfig& config);
std::unique_ptr<Unit> make_block_unit(const ModelConfig& config, int layer);
std::unique_ptr<Unit> make_head_unit(const ModelConfig& config);
std::vector<std::unique_ptr<Unit>> make_transformer_units(const ModelConfig& config);

// ---- heads (lib/model/heads.cpp)
// Sequence classification: final norm on every position, pooling to one row per
// sequence, a linear layer C -> n_classes ("classifier.weight", "classifier.bias")
// and cross-entropy on one label per row. Pooling: cls takes position 0 (a
// bidirectional trunk, config.causal = false, lets it see the whole row), mean
// averages the positions (with 1/T rounded to the working dtype).
// Labels travel in Batch::targets: the label of row b at targets[b, 0], in
// [0, n_classes), and -100 at every other position (or at [b, 0] too, to skip the
// row), so the Model's mean over valid targets is the mean over rows. The head
// writes row b's loss at position (b, 0) of the per-token losses.
// Masked LM needs no head of its own: the built-in LM head over a bidirectional
// trunk with targets only at masked positions (mask_tokens, strata/data.h).
enum class Pooling : uint8_t { cls, mean };
const char* pooling_name(Pooling pooling);
std::unique_ptr<Unit> make_classifier_head(const ModelConfig& config, int64_t n_classes, Pooling pooling = Pooling::cls);
// The embedding, config.n_layers built-in blocks and a classifier head.
std::vector<std::unique_ptr<Unit>> make_classifier_units(const ModelConfig& config, int64_t n_classes,
                                                         Pooling pooling = Pooling::cls);

// A view of `shape` at `*cursor` in a byte region, advancing the cursor by
// carve_bytes (64-byte aligned): how units lay out saved activations and scratch.
TensorView carve(char*& cursor, DType dtype, std::initializer_list<int64_t> shape);
size_t carve_bytes(DType dtype, int64_t numel);

}  // namespace strata
