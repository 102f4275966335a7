// Lora's state, shared by the compute side (lib/model/lora.cpp) and the PEFT file
// side (lib/io/lora_io.cpp).
// Invariant: every B is stored at the full height of its matmul's output (so the
// delta adds to the whole output without strided views); the rows another module
// owns are "dead": zero at init and their gradient zeroed after every backward,
// so they never move and the product there is exactly zero.
#pragma once
#include <utility>
#include <vector>

#include "strata/checkpoint.h"
#include "strata/lora.h"
#include "unit.h"

namespace strata {

constexpr int kAdapterSites = 16;  // AdapterSite ids per unit
constexpr int kAdapterSlots = 12;  // adapters per unit: dropout sites 4 .. 15

struct LoraAdapter {
  int unit;         // the Model's unit index (ctx.unit_index)
  int layer, site;  // layer: A's init key (the built-in block's layer, else the unit); site: AdapterSite::id
  int slot;         // index among the adapters of its unit: the dropout site
  int64_t in, out;  // the targeted weight is (out, in)
  int a_tensor, b_tensor;  // indices into Lora::Impl::tensors
  std::vector<std::pair<int64_t, int64_t>> dead;  // row ranges of B held at zero
  int64_t save_begin, save_end;  // rows of B in the PEFT file
  std::string weight;  // the strata parameter: "blocks.3.attn.qkv.weight"
  Buffer h;            // (rows, r) scale * drop(x) A^T, kept for backward
};

struct Lora::Impl final : LinearAdapter {
  Model* model = nullptr;
  LoraOptions options;
  float scale = 1.0f;
  DType dtype = DType::f32;
  HfLayout layout = HfLayout::gpt2;
  std::vector<LoraAdapter> adapters;
  std::vector<std::vector<int>> at_site;  // (unit * kAdapterSites + site) -> adapters
  std::vector<LoraTensor> tensors;
  int64_t numel = 0;  // flat buffer elements (padded)
  Buffer params, grads, master, m, v;  // working dtype, f32, f32 (bf16/fp16 only), f32, f32
  Buffer tmp, xd, dh, dxa;  // (rows, max out), (rows, max in), (rows, r), (rows, max in)
  int64_t capacity_rows = 0;
  bool merged = false;

  TensorView flat(const Buffer& b, DType dt) const;
  TensorView view(const Buffer& b, DType dt, const LoraTensor& t) const;
  std::vector<std::string> target_modules() const;  // PEFT's target_modules
  const std::vector<int>& at(const UnitContext& ctx, int site) const;  // the adapters of a unit's site

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override;
  void forward(const UnitContext& ctx, int layer, int site, const TensorView& x, const TensorView& y) override;
  void backward(const UnitContext& ctx, int layer, int site, const TensorView& x, const TensorView& d_out,
                const TensorView& d_inp) override;
};

}  // namespace strata
