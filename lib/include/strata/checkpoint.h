// Checkpoints, safetensors files and Hugging Face interop.
//
// A checkpoint is a directory:
//   config.json                  the ModelConfig and precision (rebuilds the Model)
//   model.safetensors            weights by parameter name, f32 or bf16
//   optimizer.rank0.safetensors  per unit: f32 master, exp_avg, exp_avg_sq (flat)
//   trainer_state.json           step, options, schedule, loss scale, data position, seed
//   manifest.json                written last: every file's size and CRC32C
// Invariants: a checkpoint is written into a temporary directory, every file and the
// directory are fsynced, and only then is it renamed into place, so a crash at any
// moment leaves the previous checkpoint loadable. Every tensor carries a CRC32C in
// its file's header and every file is listed in the manifest; a load that finds a
// mismatch throws naming the file (and tensor). Tensors are written one at a time
// from each unit's flat buffers, so state that lives elsewhere can be streamed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "strata/model.h"
#include "strata/train.h"

namespace strata {

// CRC32C (Castagnoli). Pass the previous result as `crc` to extend a checksum.
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0);

// ---- safetensors --------------------------------------------------------------------
// The format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "string"}}, then the data section.

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // safetensors spelling: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
  int64_t numel() const;
};

// Bytes per element of a safetensors dtype name; throws on names it does not know.
size_t safetensors_dtype_size(const std::string& dtype);
const char* safetensors_dtype_name(DType dtype);  // F32, BF16, F16, I32

// Opens a file and validates its header completely (length, JSON, dtypes, shapes
// against byte ranges, ranges inside the file, no overlaps or gaps) before anything
// is read. Data is read on request, tensor by tensor, with its checksum verified.
class SafetensorsReader {
 public:
  static constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;

  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& tensors() const { return tensors_; }  // in file order
  const SafetensorsEntry* find(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;  // throws naming the file
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_bytes() const { return file_bytes_; }
  uint64_t data_offset() const { return 8 + header_bytes_; }
  // CRC32C of the first data_offset() bytes (length and header).
  uint32_t header_crc32c() const { return header_crc_; }
  // The CRC32C the writer stored for a tensor's bytes; false when there is none.
  bool stored_checksum(const std::string& name, uint32_t& crc) const;

  // The tensor's raw bytes (little-endian, its own dtype); verifies the stored
  // checksum, if any, and throws naming the file and tensor on a mismatch.
  void read_raw(const SafetensorsEntry& e, void* dst) const;
  // Reads into dst (host memory; f32, bf16 or f16) converting from F64/F32/BF16/F16.
  // dst must have the tensor's element count; its shape is the caller's business.
  void read(const std::string& name, const TensorView& dst) const;
  std::vector<float> read_f32(const std::string& name) const;
  // Reads every tensor (in chunks) and checks its checksum; throws at the first bad one.
  void verify() const;

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
  std::vector<SafetensorsEntry> tensors_;
  std::map<std::string, std::string> metadata_;
  uint64_t file_bytes_ = 0, header_bytes_ = 0;
  uint32_t header_crc_ = 0;
};

// One safetensors file, or a sharded Hugging Face checkpoint: model.safetensors.index.json
// ({"weight_map": {"tensor": "model-00001-of-00003.safetensors", ...}}) and its shards
// beside it. Opening validates the index and every shard's header (a shard the index
// names must exist and hold the tensors it is given) and reads no tensor data; each
// read() is one range of one shard, so a checkpoint larger than RAM can be read.
class SafetensorsCheckpoint {
 public:
  static constexpr const char* kIndexName = "model.safetensors.index.json";
  // A .safetensors file, an index file, or a directory holding model.safetensors or
  // the index (the single file first, as transformers does).
  explicit SafetensorsCheckpoint(const std::string& path);
  ~SafetensorsCheckpoint();
  SafetensorsCheckpoint(const SafetensorsCheckpoint&) = delete;
  SafetensorsCheckpoint& operator=(const SafetensorsCheckpoint&) = delete;

  const std::string& path() const { return path_; }  // the file or the index opened
  size_t num_files() const { return files_.size(); }
  // Every tensor (file order; for an index, the weight_map's order). An entry's byte
  // range is within its own shard.
  const std::vector<SafetensorsEntry>& tensors() const { return tensors_; }
  const SafetensorsEntry* find(const std::string& name) const;
  const SafetensorsReader& file_of(const std::string& name) const;  // throws naming the tensor
  void read(const std::string& name, const TensorView& dst) const;  // as SafetensorsReader's
  std::vector<float> read_f32(const std::string& name) const;

 private:
  static std::string resolve(const std::string& path);
  void add(const SafetensorsEntry& e, size_t file);

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsReader>> files_;
  std::vector<SafetensorsEntry> tensors_;
  std::vector<size_t> file_index_;  // (tensors,) index into files_
  std::map<std::string, size_t> by_name_;  // name -> index into tensors_
};

// Writes a safetensors file with a CRC32C per tensor in __metadata__ ("crc32c.NAME").
// All tensors are declared up front (the header comes first); their bytes are then
// streamed with write() in declaration order, in chunks of any size. finish()
// rewrites the header with the checksums and fsyncs. A writer destroyed before
// finish() removes its partial file.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<SafetensorsEntry> tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  void write(const void* data, size_t bytes);
  // Writes a host tensor's values converted to the declared dtype of the next tensor
  // (f32/bf16/f16 in, F32/BF16/F16 out), in chunks.
  void write_converted(const TensorView& src);
  void finish();
  uint32_t header_crc32c() const { return header_crc_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint32_t header_crc_ = 0;
};

// A Hugging Face checkpoint directory's weights: dir/model.safetensors, or with
// max_shard_bytes > 0 and more than that to write, shards model-00001-of-0000N.safetensors
// of at most max_shard_bytes each (a larger tensor alone in its shard) and
// model.safetensors.index.json. Tensors are declared up front and written in order
// with write_converted() (as SafetensorsWriter's); finish() writes the index last.
class SafetensorsShardedWriter {
 public:
  SafetensorsShardedWriter(const std::string& dir, std::vector<SafetensorsEntry> tensors,
                           const std::map<std::string, std::string>& metadata = {},
                           uint64_t max_shard_bytes = 0);
  ~SafetensorsShardedWriter();
  SafetensorsShardedWriter(const SafetensorsShardedWriter&) = delete;
  SafetensorsShardedWriter& operator=(const SafetensorsShardedWriter&) = delete;

  size_t num_files() const { return groups_.size(); }
  void write_converted(const TensorView& src);
  void finish();

 private:
  std::string file_name(size_t group) const;
  void open(size_t group);

  std::string dir_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::vector<SafetensorsEntry>> groups_;  // the tensors of each file
  uint64_t total_bytes_ = 0;
  size_t group_ = 0, written_ = 0;  // the open file, and tensors written to it
  std::unique_ptr<SafetensorsWriter> writer_;
};

// A named host tensor, for whole-file writes.
struct NamedTensor {
  std::string name;
  TensorView view;
};
// Writes every tensor in its own dtype (i32/f32/bf16/f16), then fsyncs.
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// ---- checkpoints --------------------------------------------------------------------

struct CheckpointOptions {
  DType weights_dtype = DType::f32;  // model.safetensors: f32 or bf16
  bool optimizer = true;  // with a Trainer: write the optimizer state
};

// Run state the Trainer does not own, saved next to it.
struct TrainingProgress {
  int64_t data_position = 0;  // BatchLoader::position() of the training loader
  std::map<std::string, std::string> extra;  // free-form (e.g. the command line)
};

struct CheckpointInfo {
  std::string path;
  ModelConfig config;
  Precision precision = Precision::fp32;
  bool has_trainer = false;  // trainer_state.json (and the optimizer state) present
  TrainOptions options;
  TrainerState trainer;
  TrainingProgress progress;
  std::vector<std::pair<std::string, uint64_t>> files;  // name, bytes (from the manifest)
};

// Writes a checkpoint of the model and, when given, the trainer into `dir`, which must
// not exist; it appears complete or not at all. Call between optimizer steps. With a
// data-parallel (ZeRO) Trainer every rank calls it together: the shards are gathered
// into the single-device format, rank 0 writes, and all return once it is in place.
// An offloaded Trainer's state is read from its tiers one unit at a time into the
// same format; a model whose state lives in a store is saved or loaded with its Trainer.
void save_checkpoint(const std::string& dir, const Model& model, const Trainer* trainer,
                     const TrainingProgress& progress = {}, const CheckpointOptions& options = {});
// Reads config.json, trainer_state.json and the manifest, checking their checksums.
CheckpointInfo read_checkpoint_info(const std::string& dir);
// What load_checkpoint takes from a checkpoint into a Trainer: everything (resume:
// weights, optimizer and trainer state), or the weights alone as the starting point
// of a new run (Trainer::start_from_parameters: a fresh optimizer, step 0).
enum class LoadScope : uint8_t { resume, weights };
// Loads weights (and, with a trainer, the optimizer and trainer state) into a model
// built with the checkpoint's config (dropout rates may differ). A ZeRO Trainer on any
// number of ranks loads any checkpoint: each rank reads it and keeps its shards. With
// a trainer the tensors go unit by unit into wherever it keeps them (shards, host or
// NVMe tiers), so the model is never resident in RAM; a model whose state lives in a
// store (built Model::Init::deferred, or offloaded) needs its trainer. Checks
// everything before changing any state (except the tensors being read); returns the
// checkpoint's info.
CheckpointInfo load_checkpoint(const std::string& dir, Model& model, Trainer* trainer = nullptr,
                               LoadScope scope = LoadScope::resume);
// Reads every file and checks every checksum; throws naming the first bad file/tensor.
void verify_checkpoint(const std::string& dir);
// Whether dir holds a (manifest-complete) strata checkpoint.
bool is_checkpoint(const std::string& dir);

// A run directory holds checkpoints named step_00000123.
std::string checkpoint_path(const std::string& run_dir, int64_t step);
// Saves at the trainer's step, then removes all but the newest keep_last checkpoints
// (keep_last 0 keeps all) and stale temporaries of interrupted saves. Returns the path.
std::string save_run_checkpoint(const std::string& run_dir, const Model& model, const Trainer& trainer,
                                const TrainingProgress& progress = {}, const CheckpointOptions& options = {},
                                int keep_last = 3);
// Complete checkpoints of a run, oldest first; latest_checkpoint is the last or "".
std::vector<std::string> list_checkpoints(const std::string& run_dir);
std::string latest_checkpoint(const std::string& run_dir);

// JSON forms of a ModelConfig (what config.json holds).
std::string model_config_to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const std::string& text, const std::string& what);

// ---- Hugging Face interop -----------------------------------------------------------
// gpt2:  transformer.wte/wpe, transformer.h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2,
//        mlp.c_fc, mlp.c_proj}, transformer.ln_f; Conv1D weights are [in, out].
// llama: model.embed_tokens, model.layers.{i}.{input_layernorm, self_attn.{q,k,v,o}_proj,
//        post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head.
//        strata's qkv is [q; k; v] along the output dim, its SwiGLU fc is [gate; up].
enum class HfLayout : uint8_t { gpt2, llama };
const char* hf_layout_name(HfLayout layout);
HfLayout hf_layout_from_string(const std::string& name);
// The layout a config can be exported as (throws when it fits neither).
HfLayout hf_layout_for(const ModelConfig& config);

// Writes dir/config.json (transformers' format) and dir/model.safetensors, or with
// max_shard_bytes > 0 shards and their index (SafetensorsShardedWriter).
void export_hf(const Model& model, const std::string& dir, HfLayout layout, DType dtype = DType::f32,
               uint64_t max_shard_bytes = 0);
// Reads an HF config.json (model_type gpt2 or llama) as a ModelConfig.
ModelConfig read_hf_config(const std::string& dir, HfLayout* layout = nullptr);
// Loads HF-layout weights (dir/model.safetensors, dir's sharded index, or a file: see
// SafetensorsCheckpoint) into a model whose config matches; every tensor's name and
// shape is checked first. With a trainer, the weights are its starting point
// (Trainer::start_from_parameters) and go one unit at a time into wherever it keeps
// them (host or NVMe tiers, ZeRO shards): host memory holds one unit, never the
// model. A model whose state lives in a store (offloaded, ZeRO-3, built
// Model::Init::deferred) needs its trainer.
void import_hf(Model& model, const std::string& dir_or_file, HfLayout layout, Trainer* trainer = nullptr);

}  // namespace strata
