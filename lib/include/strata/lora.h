// LoRA fine-tuning: trainable low-rank adapters on a frozen base Model.
//   y = W x + (alpha / r) * B A drop(x),  A (r, in) Kaiming-uniform, B (out, r) zero,
// so a fresh Lora leaves the model's outputs exactly those of the base. The Lora
// attaches itself to the Model and freezes it (no base gradients, no base optimizer
// state); a Trainer on that model then trains the adapters only. Files are PEFT's:
// adapter_model.safetensors (base_model.model.<HF path>.lora_A.weight [r, in],
// lora_B.weight [out, r]) and adapter_config.json; docs/lora.md has the mapping.
// Adapters on a custom unit's declared sites (LoraOptions::sites) use strata's names.
// Invariant: with B = 0 the adapters add exact zeros; merge() folds them into the
// base weights and the forward then skips them, unmerge() subtracts them back.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "strata/model.h"
#include "strata/optim.h"

namespace strata {

// Which projections get adapters:
//   query_value  q and v (GPT-2: the fused c_attn with its k rows held at zero);
//   attention    q, k, v and the attention output projection;
//   all_linear   those and the MLP's (fc / gate, up; proj / down).
enum class LoraTargets : uint8_t { query_value, attention, all_linear };
const char* lora_targets_name(LoraTargets t);
LoraTargets lora_targets_from_string(const std::string& name);  // "qv", "attention", "all"

struct LoraOptions {
  LoraTargets targets = LoraTargets::query_value;
  int64_t rank = 8;
  float alpha = 8.0f;    // scale = alpha / rank
  float dropout = 0.0f;  // on the adapter's input, training only
  uint64_t seed = 0;     // A's initialisation
  // Empty: the built-in blocks' projections chosen by `targets`, in PEFT's names.
  // Otherwise the declared sites (Unit::adapter_sites) of these names on every unit
  // ("*": all of them), `targets` unused, in strata's names:
  // "<unit>.<site>.lora_A.weight" / ".lora_B.weight" (B whole, [out, r]).
  std::vector<std::string> sites;
};

// One adapter tensor: its PEFT key and where it sits in the Lora's flat buffer.
struct LoraTensor {
  std::string key;  // "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"
  int64_t offset;   // elements
  std::vector<int64_t> shape;  // as stored in strata (B is the full output height)
  // B: row ranges another module owns (q+v on GPT-2's fused c_attn: the k rows;
  // LLaMA's q_proj: the k and v rows), zero and never trained.
  std::vector<std::pair<int64_t, int64_t>> dead_rows;
  int64_t numel() const;
};

// The options a saved adapter directory was trained with (its adapter_config.json:
// r, lora_alpha, lora_dropout, and strata_targets or, in a PEFT file, the targets
// its target_modules imply), so a Lora made with them can load() it.
LoraOptions read_lora_options(const std::string& dir);

class Lora {
 public:
  // Attaches to `model` (which must have no Lora yet) and freezes its base. Create it
  // before the model's Trainer: a Trainer made earlier holds base optimizer state.
  Lora(Model& model, const LoraOptions& options);
  ~Lora();  // detaches; the base stays frozen
  Lora(const Lora&) = delete;
  Lora& operator=(const Lora&) = delete;

  const LoraOptions& options() const;
  float scale() const;  // alpha / rank
  int64_t num_parameters() const;  // trainable elements (B counted at its PEFT height)
  const std::vector<LoraTensor>& tensors() const;
  TensorView tensor(const std::string& key) const;  // working dtype
  TensorView grad(const std::string& key) const;    // f32
  TensorView flat_params() const;
  TensorView flat_grads() const;

  // Optimizer (the Trainer calls these when the model's base is frozen). Weight decay
  // (options.weight_decay) applies to every A and B.
  void zero_grad();
  void step(const AdamWOptions& options, float lr, float grad_scale, int64_t t);
  // Adapter bytes: working params, f32 grads, f32 master (if not fp32) and moments.
  size_t param_bytes() const;
  size_t grad_bytes() const;
  size_t optimizer_bytes() const;

  // dir/adapter_model.safetensors (f32) and dir/adapter_config.json. `base_name`
  // goes into base_model_name_or_path.
  void save(const std::string& dir, const std::string& base_name = "") const;
  // Loads adapters saved by save() or by PEFT for the same targets and rank; checks
  // every key and shape first.
  void load(const std::string& dir);

  // W += scale * B A on every targeted weight; the forward then skips the adapters.
  void merge();
  // W -= scale * B A (rounded to the working dtype: not bitwise the pre-merge W).
  void unmerge();
  bool merged() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata
