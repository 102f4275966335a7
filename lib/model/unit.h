// The unit interface: the grain of everything that moves in strata. A unit declares
// its parameters (laid out by the Model in one flat buffer), saves what its
// backward needs in buffers it reserves for a row capacity, and takes backward
// scratch from a region the Model shares between all units.
// Invariants: parameter gradients accumulate (+=) into the unit's f32 grad views;
// activation gradients (dx) are assigned. A unit never allocates in forward or
// backward: reserve() sizes everything for the largest batch first.
#pragma once
#include <string>
#include <vector>

#include "ops.h"
#include "strata/model.h"

namespace strata {

struct ParamSpec {
  enum class Init : uint8_t { normal, ones, zeros };
  std::string name;  // relative to the unit: "attn.qkv.weight"
  std::vector<int64_t> shape;
  Init init = Init::normal;
  float std = 0.02f;
  bool decay = false;
};

// Dropout sites of a unit: part of the Philox key of every mask.
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
  num::RandomKey dropout_key(DropoutSite site) const;
};

// Parameter and gradient views of one unit, in param_specs() order, followed by the
// views it borrows from other units (tied embeddings).
struct UnitParams {
  std::vector<TensorView> params;
  std::vector<TensorView> grads;
};

// What flows into and out of a unit. Unused fields stay undefined.
struct UnitIO {
  TensorView tokens;   // (B, T) i32       embedding input
  TensorView targets;  // (B, T) i32       head input
  TensorView x;        // (B, T, C)        block / head input
  TensorView y;        // (B, T, C)        embedding / block output
  TensorView losses;   // (B*T) f32        head output: per-token loss
  TensorView dy;       // (B, T, C)        gradient of y (may be overwritten)
  TensorView dx;       // (B, T, C)        gradient of x (assigned)
  float d_loss = 0.0f;  // head: gradient of the total loss w.r.t. each token's loss
  void* transient = nullptr;  // shared workspace for what the unit recomputes
};

// A trainable side path on a block's linear layers (LoRA, lib/model/lora.cpp). The
// block calls forward right after the targeted matmul's forward (y += delta(x)) and
// backward right after its matmul_backward (d_inp += d delta/dx, own grads +=).
// Sites: 0 attention qkv, 1 attention proj, 2 mlp fc, 3 mlp proj.
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
  virtual std::string name() const = 0;
  virtual std::vector<ParamSpec> param_specs() const = 0;
  // Full names of parameters of other units this unit uses ("embedding.wte.weight").
  virtual std::vector<std::string> borrowed() const { return {}; }

  // Sizes saved activations for up to `rows` = B*T rows.
  virtual void reserve(Device& device, DType dtype, int64_t B, int64_t T) = 0;
  // What the unit keeps for backward and what it recomputes there. Units that do
  // not support a mode keep everything.
  virtual void set_recompute(Recompute mode) {}
  // Blocks run the adapter (null: none) on their linear layers.
  virtual void set_adapter(LinearAdapter* adapter) {}
  // Bytes of the workspace shared by all units for activations they recompute:
  // valid from a unit's forward (or recompute) until the next unit's.
  virtual size_t transient_bytes(DType dtype, int64_t B, int64_t T) const { return 0; }
  // Bytes of backward scratch needed for `rows` rows.
  virtual size_t scratch_bytes(DType dtype, int64_t rows) const = 0;
  virtual void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) = 0;
  virtual void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) = 0;
};

std::unique_ptr<Unit> make_embedding_unit(const ModelConfig& config);
std::unique_ptr<Unit> make_block_unit(const ModelConfig& config, int layer);
std::unique_ptr<Unit> make_head_unit(const ModelConfig& config);

// The head's inference path: logits (B, V) f32 of rows x (B, C).
void head_logits(Unit& head, const UnitContext& ctx, const UnitParams& p, const TensorView& x,
                 const TensorView& logits);

// Helpers shared by the units: a view of `shape` at `*cursor` in a byte region,
// advancing the cursor (64-byte aligned).
TensorView carve(char*& cursor, DType dtype, std::initializer_list<int64_t> shape);
size_t carve_bytes(DType dtype, int64_t numel);

}  // namespace strata
