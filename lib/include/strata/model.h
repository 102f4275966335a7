// Transformer language models: configuration, presets and the Model.
// A model is an ordered list of units (embedding, each block, final norm + head).
// Each unit's parameters live in ONE flat buffer (4 KiB aligned, padded to a
// multiple of 4 KiB) and its gradients in one flat f32 buffer of the same element
// layout; named tensors are views into them. Everything that moves state (optimizer,
// checkpoints, offload, ZeRO) works unit by unit on those flat buffers.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/tensor.h"

namespace strata {

enum class NormKind : uint8_t { layernorm, rmsnorm };
enum class MlpKind : uint8_t { gelu, swiglu };
enum class PositionKind : uint8_t { learned, rope, sinusoidal };

// RoPE frequency rescaling, as Hugging Face's rope types: none ("default"), linear
// (every frequency / factor) and llama3 (low frequencies / factor, high ones kept, a
// smooth ramp between; Llama-3.1 and 3.2).
enum class RopeScalingKind : uint8_t { none, linear, llama3 };
struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::none;
  float factor = 1.0f;            // linear, llama3
  float low_freq_factor = 1.0f;   // llama3
  float high_freq_factor = 4.0f;  // llama3
  int64_t original_max_seq = 8192;  // llama3: original_max_position_embeddings
  bool operator==(const RopeScaling&) const = default;
};
const char* rope_scaling_name(RopeScalingKind kind);

struct ModelConfig {
  int64_t vocab_size = 50257;
  int64_t n_layers = 12;
  int64_t n_heads = 12;
  // Key/value heads (grouped-query attention; 1 is multi-query). 0 means n_heads.
  int64_t n_kv_heads = 0;
  // Width of one attention head; 0 means d_model / n_heads. Set it where a model's heads
  // are not hidden / heads wide (Qwen3, Gemma, some Mistral variants): q is then
  // n_heads * head_dim() wide and the attention projection maps that back to d_model.
  int64_t d_head = 0;
  int64_t d_model = 768;
  int64_t d_mlp = 3072;  // hidden width of the MLP (per branch for SwiGLU)
  int64_t max_seq = 1024;
  NormKind norm = NormKind::layernorm;
  MlpKind mlp = MlpKind::gelu;
  PositionKind positions = PositionKind::learned;
  bool bias = true;
  bool qkv_bias = false;  // bias on the q/k/v projection even when `bias` is false (Qwen2)
  bool tied_embeddings = true;
  bool causal = true;
  // Sliding-window attention (Mistral, Qwen2): position i sees keys (i - W, i]; 0 = the
  // whole causal past. Needs causal.
  int64_t sliding_window = 0;
  // model_type of the Hugging Face config.json this model was read from ("llama",
  // "mistral", "qwen2", "gpt2"), so export writes the same architecture back (a Mistral
  // without a window has llama's shape); empty: export picks it from the shape.
  std::string hf_model_type;
  float dropout_embedding = 0.0f;
  float dropout_attention = 0.0f;
  float dropout_residual = 0.0f;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;

  // "gpt2-small" (124M), "gpt2-medium" (350M), "gpt2-large" (774M), "gpt2-xl" (1.5B),
  // "llama-60m", "llama-350m", "llama-1b", "llama-3b", "gpt-mini" (the benchmark
  // config), "demo" (the byte-level demo model). Throws listing the names otherwise.
  static ModelConfig preset(const std::string& name);
  static std::vector<std::string> preset_names();

  // Throws strata::Error naming the first inconsistent field and what to do.
  void validate() const;
  int64_t head_dim() const { return d_head != 0 ? d_head : d_model / n_heads; }
  // Width of the attention output (and of the q columns): n_heads * head_dim().
  int64_t attention_width() const { return n_heads * head_dim(); }
  int64_t kv_heads() const { return n_kv_heads == 0 ? n_heads : n_kv_heads; }
  // Columns of the fused q/k/v projection: n_heads query heads, kv_heads() keys and values.
  int64_t qkv_width() const { return (n_heads + 2 * kv_heads()) * head_dim(); }
  int64_t num_parameters() const;
  // Training FLOPs per token at sequence length seq: 6 * (matmul parameters) plus
  // attention's 6 * 2 * n_layers * seq * d_model (forward scores and values, x3 for
  // forward + backward), the accounting of the PaLM paper's appendix B; with d_head set,
  // attention_width() for d_model, and with a sliding window min(window, seq) for seq.
  double flops_per_token(int64_t seq) const;
  std::string describe() const;  // one line: layers, width, heads, params
};

enum class Precision : uint8_t { fp32, bf16, fp16 };
const char* precision_name(Precision p);
Precision precision_from_string(const std::string& name);
// Storage dtype of working parameters and activations under a precision.
DType precision_dtype(Precision p);

// What a parameter tensor is, declared by its unit (ParamSpec, strata/unit.h). The
// engine reads meaning from the role alone, never from a name or a unit's position:
// weight decay reaches matrices by default (AdamWOptions: embeddings, norms and
// biases on request); a frozen base under LoRA still runs norm backward (its weight
// gradient goes to a discarded sink), while other frozen gradients are skipped.
enum class ParamRole : uint8_t { matrix, embedding, norm, bias };
const char* param_role_name(ParamRole role);

// Where a parameter tensor sits inside its unit's flat buffer.
struct ParamInfo {
  std::string name;  // "blocks.3.attn.qkv.weight"
  int unit;
  int64_t offset;  // elements from the start of the unit's buffer
  std::vector<int64_t> shape;
  ParamRole role;
  int64_t numel() const;
};

// Per-call inputs of a forward pass.
// Host memory on every device: the model checks the tokens on the host and copies
// them to its device itself (Stream::copy).
// A named extra input (an encoder's source tokens), read by the units whose
// Unit::batch_input() names it.
struct NamedInput {
  std::string name;
  TensorView tokens;  // (B, T) i32, the shape of Batch::inputs, each in [0, vocab_size)
};
struct Batch {
  TensorView inputs;   // (B, T) i32 tokens
  TensorView targets;  // (B, T) i32, or undefined for inference; -100 = ignore
  std::vector<NamedInput> extra = {};  // the model's named batch inputs, checked like inputs
};

// Keys of the counter-based randomness of one micro-step: dropout masks are a pure
// function of (seed, step, micro, unit, site), so a replay draws the same masks.
struct StepKey {
  uint64_t seed = 0;
  int64_t step = 0;
  int64_t micro = 0;
};

// What a transformer block keeps for backward (activation checkpointing):
//   none       keep every activation backward needs (fastest, most memory);
//   selective  keep the matmul outputs (qkv, attention output, x2, fc) and recompute
//              the norms and the MLP activation: about 40% less per block for about
//              1% more FLOPs (see docs/recompute.md for the measured choice);
//   full       keep only the block's input and replay its whole forward in backward.
// Recompute replays the same ops on the same inputs with the same Philox keys, so
// losses and gradients are bitwise those of `none`.
enum class Recompute : uint8_t { none, selective, full };
const char* recompute_name(Recompute r);

struct RecomputePolicy {
  std::vector<Recompute> blocks;  // one entry per block; empty = none everywhere
  static RecomputePolicy none(int64_t n_layers);
  static RecomputePolicy selective(int64_t n_layers);
  static RecomputePolicy every_block(int64_t n_layers);
  // Full recompute of blocks k-1, 2k-1, ...: every k-th block (k = 1 is every block).
  static RecomputePolicy every_kth(int64_t n_layers, int64_t k);
  // "none", "selective", "full" (every block), or "every-K".
  static RecomputePolicy parse(const std::string& spec, int64_t n_layers);
};

class Unit;
class KvCache;
class ParamStore;
class LinearAdapter;
class Lora;
struct UnitParams;
struct UnitIO;

class Model {
 public:
  // How the constructor treats the state. resident: parameter and gradient buffers
  // are allocated on the device and the parameters initialised. deferred: nothing is
  // allocated; the offload store made next initialises each unit straight into its
  // tier (init_unit_params), so a model larger than RAM is never resident. Until a
  // store owns it, a deferred model's state cannot be read or trained.
  enum class Init : uint8_t { resident, deferred };
  // Lays out and initialises the parameters on `device` in `precision` (GPT-2 init
  // from the counter-based RNG: the same seed gives the same model on any device).
  // The GPT-2 / LLaMA builder: Model(config, make_transformer_units(config), ...).
  Model(const ModelConfig& config, Device& device, Precision precision, uint64_t seed,
        Init init = Init::resident);
  // A model composed from a program's own units (strata/unit.h), run in order:
  // units[0] turns tokens into the (B, T, d_model) stream, units[1 .. n-2] map the
  // stream to itself (the trunk: config.n_layers of them, the units recompute
  // policies address), units[n-1] turns it into per-token losses. Parameters are
  // initialised as the built-in ones are (Philox keyed by seed, unit, tensor). Throws
  // before building anything when a unit is null, two share a name, or the count
  // disagrees with config.n_layers.
  Model(const ModelConfig& config, std::vector<std::unique_ptr<Unit>> units, Device& device, Precision precision,
        uint64_t seed, Init init = Init::resident);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  Precision precision() const { return precision_; }
  Device& device() const { return *device_; }

  // ---- parameters, unit by unit
  int num_units() const { return int(units_.size()); }
  std::string unit_name(int u) const;
  Unit& unit(int u) const;  // the unit itself (throws when u is out of range)
  int64_t unit_numel(int u) const;  // elements in the unit's flat buffers (padded)
  TensorView unit_params(int u) const;  // (numel) working params, precision_dtype
  TensorView unit_grads(int u) const;   // (numel) f32 accumulated gradients
  const std::vector<ParamInfo>& parameters() const { return params_; }
  TensorView parameter(const std::string& name) const;  // a named view (throws if unknown)
  TensorView parameter_grad(const std::string& name) const;
  int64_t num_parameters() const;  // trainable elements, without padding
  // Unit u's initial working params into host memory `dst`: unit_numel(u) elements of
  // precision_dtype, padding zero; bitwise what the resident constructor holds.
  void init_unit_params(int u, void* dst) const;
  bool params_resident() const { return params_resident_; }
  bool grads_resident() const { return grads_resident_; }

  void zero_grad();

  // Where units' parameters and gradients live during forward and backward (ZeRO,
  // offload); null = the model's own resident buffers. The store must outlive its use.
  void set_store(ParamStore* store) { store_ = store; }
  ParamStore* store() const { return store_; }
  // Frees the resident parameter and/or gradient buffers once a store owns that
  // state (unit_params / parameter(), unit_grads / parameter_grad() then throw).
  void release_resident_state(bool params, bool grads);

  // Activation checkpointing per block; takes effect at the next forward.
  void set_recompute(const RecomputePolicy& policy);
  const RecomputePolicy& recompute() const { return recompute_; }

  // LoRA (strata/lora.h) attaches itself here (null, null detaches). A frozen base
  // holds no gradient buffers: backward computes activation gradients only (the
  // norms' weight gradients go to a small discarded sink) and skips the embedding.
  void attach_lora(Lora* lora, LinearAdapter* adapter);
  Lora* lora() const { return lora_; }
  void freeze_base();
  bool base_frozen() const { return frozen_; }

  // ---- one micro-batch
  // Forward; returns the mean loss over non-ignored targets (targets required).
  // With `train`, dropout is active and activations are kept for backward().
  // Checks every token and target and the shapes before any state changes.
  float forward(const Batch& batch, const StepKey& key, bool train);
  // Backward of the last forward(train = true), accumulating (+=) into unit grads.
  // d_loss_scale multiplies the gradient of the mean loss (1/accum, loss scale).
  void backward(float d_loss_scale);

  // ---- custom losses (side inputs: docs/custom_units.md)
  // Forward of every unit but the last (the loss unit); targets are not needed. Read
  // any unit's output with unit_output(); with `train`, backward_from() follows.
  void forward_outputs(const Batch& batch, const StepKey& key, bool train);
  // Backward of the last forward (either kind, train = true) from a caller's gradient
  // of unit `unit`'s output (unit < num_units() - 1): d_output (B, T, C) in the working
  // dtype, host or device memory. Units after `unit` are not back-propagated; units up
  // to it accumulate (+=) into their gradients, as backward() does.
  void backward_from(int unit, const TensorView& d_output);
  // Logits of every position, (B, T, V) f32 on the host, from the built-in head
  // (inference: no dropout; the batch's targets are not needed).
  std::vector<float> logits(const Batch& batch);

  // Unit u's output in the last forward: the residual stream after it, (B, T, C) in
  // the working dtype, valid until the next forward; undefined for the head.
  TensorView unit_output(int u) const;

  // Logits of the last position of each row of `inputs` (B, T): (B, V) f32, host.
  std::vector<float> last_logits(const TensorView& inputs);

  // Incremental inference (lib/model/decode.cpp): runs `tokens` (B, T) i32, host, at
  // positions [cache.length(), cache.length() + T) of B sequences through the model,
  // attending over and extending `cache`; returns the logits of each row's last new
  // position, (B, V) f32 on the host. Prefill is one call with the whole prompt,
  // decoding one call per token (T = 1). Checks the tokens and the cache's room first.
  // With a left-padded cache (KvCache's starts) positions are per row: row b's token
  // at batch position i is at model position i - starts[b]; padding tokens are any
  // in-vocabulary ids and change nothing in the real tokens' results.
  std::vector<float> decode(const TensorView& tokens, KvCache& cache);

 private:
  struct Activations;
  struct Views;
  struct Wiring;
  void check_batch(const Batch& batch) const;
  void check_tokens(const char* what, const TensorView& tokens) const;
  void ensure_activations(int64_t B, int64_t T);
  void run_forward(const Batch& batch, int64_t B, int64_t T, const StepKey& key, bool train);
  UnitIO unit_io(int u, int64_t B, int64_t T) const;  // views of u's inputs and output
  void run_backward(int top, float d_loss);  // from unit top (the gradient of its output in grad_a)
  // Views of unit u (and the units it borrows from) from the store; release after use.
  UnitParams acquire(int u, bool grads);
  void release(int u, bool grads);
  std::vector<int> units_used_by(int u) const;

  ModelConfig config_;
  Device* device_;
  Precision precision_;
  uint64_t seed_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<Buffer> param_buffers_;
  std::vector<Buffer> grad_buffers_;
  std::vector<int64_t> unit_numel_;
  std::vector<ParamInfo> params_;
  std::unique_ptr<Activations> acts_;
  std::unique_ptr<Views> views_;  // each unit's tensors: which ParamInfo fills each slot
  std::unique_ptr<Wiring> wiring_;  // what each unit reads and publishes (side inputs)
  ParamStore* store_ = nullptr;
  bool params_resident_ = true;
  bool grads_resident_ = true;
  RecomputePolicy recompute_;
  StepKey last_key_;
  int64_t last_B_ = 0, last_T_ = 0;
  int64_t last_valid_ = 0;
  bool have_saved_ = false;
  bool saved_loss_ = false;  // the last forward ran the loss unit
  Lora* lora_ = nullptr;
  LinearAdapter* adapter_ = nullptr;
  bool frozen_ = false;
  Buffer grad_sink_;  // f32, the largest 1-D parameter: norm weight grads of a frozen base
};

// The KV cache of incremental decoding: every block's rotated keys and values of up
// to `capacity` positions of `batch` sequences, each (layers, B, n_kv_heads,
// capacity, head_dim) in the model's working dtype on its device, plus the
// decoding workspace. length() positions are filled; reset() empties it.
// Left padding (batched prompts of different lengths, as transformers does it):
// starts[b] is the number of padding positions at the head of row b. A token at
// batch position i (length() counts padding) has model position i - starts[b] (RoPE,
// learned or sinusoidal embedding); padding is neither cached nor attended, so each
// row computes bitwise what it computes alone. Empty starts: no padding.
class KvCache {
 public:
  KvCache(const Model& model, int64_t batch, int64_t capacity = 0,  // 0: the model's max_seq
          std::vector<int32_t> starts = {});
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  const std::vector<int32_t>& starts() const { return starts_; }
  void reset() { length_ = 0; }

 private:
  friend class Model;
  int64_t batch_, capacity_, kv_heads_, length_ = 0;
  std::vector<int32_t> starts_;  // (B) padding positions per row, or empty
  Buffer keys_, values_;  // (layers, B, NKV, capacity, HD)
  Buffer work_;           // decoding workspace, grown to the largest call
};

// Text generation with a KV cache: extends each prompt by up to max_new_tokens
// tokens. temperature 0 is greedy; otherwise the next token is drawn among the top_k
// most likely (0: all) and, of those, the smallest set whose probability reaches
// top_p (1: all), from the counter-based RNG: token i of row r uses Philox
// (seed, r, i), so a sample is reproducible and a row does not depend on the batch.
// A row stops after emitting a token of `stop` (which is kept in its output).
struct SampleOptions {
  int64_t max_new_tokens = 200;
  float temperature = 1.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
  std::vector<int32_t> stop;
  uint64_t seed = 1;
  // Called with (row, token) as each token is chosen, in order; null: none.
  std::function<void(int64_t row, int32_t token)> on_token;
};
// Prompts of any lengths, one row each (shorter ones are left-padded to the longest:
// see KvCache; each row's tokens are bitwise those it generates alone, except that row
// r draws with Philox key r); returns each row's new tokens. Throws before any work
// when the longest prompt + max_new_tokens exceeds max_seq.
std::vector<std::vector<int32_t>> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const SampleOptions& options);
std::vector<int32_t> sample(Model& model, const std::vector<int32_t>& prompt, const SampleOptions& options);

}  // namespace strata
