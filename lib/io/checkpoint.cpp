// save_checkpoint / load_checkpoint: the directory layout of checkpoint.h.
// Invariants: files are written into a temporary sibling directory, each fsynced,
// the manifest last, the directory fsynced, then renamed into place and the parent
// fsynced — a reader sees a complete checkpoint or none. Tensors are written one at
// a time straight from the unit flat buffers (no whole-model staging copy); state in
// a store (ZeRO shards, offload tiers) moves one unit at a time through the Trainer.
// Loading checks the manifest, sizes, JSON checksums, header checksums, names,
// shapes and the optimizer layout before reading any tensor data.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "file_io.h"
#include "lib/core/host_convert.h"
#include "json.h"
#include "state_json.h"
#include "strata/checkpoint.h"
#include "strata/dist.h"

namespace strata {

namespace {
namespace fs = std::filesystem;
using json::Value;

constexpr const char* kFormat = "strata-checkpoint";
constexpr int64_t kVersion = 1;
const char* kConfigFile = "config.json";
const char* kModelFile = "model.safetensors";
const char* kOptimizerFile = "optimizer.rank0.safetensors";
const char* kTrainerFile = "trainer_state.json";
const char* kManifestFile = "manifest.json";

std::string hex8(uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", x);
  return buf;
}

// A fingerprint of the flat-buffer layout: optimizer state is only meaningful for
// the layout it was written with.
std::string layout_fingerprint(const Model& m) {
  std::ostringstream o;
  for (const ParamInfo& p : m.parameters()) {
    o << p.name << ':' << p.unit << ':' << p.offset;
    for (int64_t d : p.shape) o << ',' << d;
    o << ';';
  }
  for (int u = 0; u < m.num_units(); ++u) o << m.unit_numel(u) << ';';
  const std::string s = o.str();
  return hex8(crc32c(s.data(), s.size()));
}

struct ManifestEntry {
  std::string name;
  uint64_t bytes = 0;
  std::string crc_kind;  // "crc32c" (whole file) or "header_crc32c" (safetensors)
  uint32_t crc = 0;
};

void write_json_file(const std::string& dir, const char* name, const std::string& text,
                     std::vector<ManifestEntry>& manifest) {
  io::write_file_synced(dir + "/" + name, text);
  manifest.push_back({name, text.size(), "crc32c", crc32c(text.data(), text.size())});
}

std::string config_json(const Model& model) {
  Value v = Value::object();
  v.set("format", Value::string(kFormat));
  v.set("version", Value::integer(kVersion));
  v.set("precision", Value::string(precision_name(model.precision())));
  v.set("model", io::to_json(model.config()));
  return v.dump(2) + "\n";
}

// Files are read and written from host memory: a device tensor moves through a host
// copy of its bytes, viewed with the same dtype and shape and no device.
TensorView host_view(const TensorView& v, std::vector<char>& bytes) {
  bytes.resize(v.nbytes());
  TensorView h = v;
  h.data = bytes.data();
  h.device = nullptr;
  return h;
}
TensorView stage_to_host(const TensorView& v, std::vector<char>& bytes) {
  TensorView h = host_view(v, bytes);
  v.device->stream().copy(bytes.data(), v.data, bytes.size());
  v.device->stream().synchronize();
  return h;
}
void copy_from_host(const TensorView& v, const std::vector<char>& bytes) {
  v.device->stream().copy(v.data, bytes.data(), bytes.size());
  v.device->stream().synchronize();
}

// `writer` false: a ZeRO rank other than 0, which only takes part in the gathers, in
// the same order as rank 0.
void write_model(const std::string& dir, const Model& model, const Trainer* trainer, DType dtype, bool writer,
                 std::vector<ManifestEntry>& manifest) {
  STRATA_CHECK(dtype == DType::f32 || dtype == DType::bf16,
               "save_checkpoint: weights_dtype must be f32 or bf16, got " << dtype_name(dtype));
  // The parameters may live in shards (ZeRO) or on the offload tiers: read per unit.
  const bool by_unit = trainer && (trainer->comm() || model.store());
  std::unique_ptr<SafetensorsWriter> w;
  if (writer) {
    std::vector<SafetensorsEntry> entries;
    for (const ParamInfo& p : model.parameters()) entries.push_back({p.name, safetensors_dtype_name(dtype), p.shape, 0, 0});
    w = std::make_unique<SafetensorsWriter>(dir + "/" + kModelFile, std::move(entries),
                                            std::map<std::string, std::string>{
                                                {"format", "pt"}, {"strata.precision", precision_name(model.precision())}});
  }
  std::vector<float> unit;
  std::vector<char> staged;
  int have = -1;
  for (const ParamInfo& p : model.parameters()) {
    TensorView v;
    if (by_unit) {
      if (have != p.unit) unit = trainer->unit_parameters(have = p.unit);
      v = TensorView(unit.data() + p.offset, DType::f32, {p.numel()}, nullptr);
    } else {
      v = stage_to_host(model.parameter(p.name), staged);
    }
    if (w) w->write_converted(v);
  }
  if (!w) return;
  w->finish();
  manifest.push_back({kModelFile, io::File(dir + "/" + kModelFile, io::File::Mode::read).size(), "header_crc32c",
                      w->header_crc32c()});
}

void write_optimizer(const std::string& dir, const Model& model, const Trainer& trainer, bool writer,
                     std::vector<ManifestEntry>& manifest) {
  std::unique_ptr<SafetensorsWriter> w;
  if (writer) {
    std::vector<SafetensorsEntry> entries;
    for (int u = 0; u < model.num_units(); ++u)
      for (const char* part : {"master", "exp_avg", "exp_avg_sq"})
        entries.push_back({model.unit_name(u) + "." + part, "F32", {model.unit_numel(u)}, 0, 0});
    w = std::make_unique<SafetensorsWriter>(dir + "/" + kOptimizerFile, std::move(entries),
                                            std::map<std::string, std::string>{{"format", "pt"},
                                                                               {"strata.rank", "0"},
                                                                               {"strata.world_size", "1"},
                                                                               {"strata.layout", layout_fingerprint(model)}});
  }
  // Unit by unit, one flat f32 buffer at a time, whole whatever the sharding (ZeRO
  // gathers it): a checkpoint loads on any number of ranks.
  std::vector<float> master, m, v;
  for (int u = 0; u < model.num_units(); ++u) {
    trainer.optimizer_state(u, master, m, v);
    if (w)
      for (const std::vector<float>* t : {&master, &m, &v}) w->write(t->data(), t->size() * 4);
  }
  if (!w) return;
  w->finish();
  manifest.push_back({kOptimizerFile, io::File(dir + "/" + kOptimizerFile, io::File::Mode::read).size(),
                      "header_crc32c", w->header_crc32c()});
}

std::atomic<int> temp_counter{0};

}  // namespace

void save_checkpoint(const std::string& dir, const Model& model, const Trainer* trainer,
                     const TrainingProgress& progress, const CheckpointOptions& options) {
  // Under ZeRO every rank calls this together: all gather, rank 0 checks and writes (a
  // failure there aborts the others through run_ranks), and the closing barrier means
  // the checkpoint exists when any rank returns.
  dist::Comm* comm = trainer ? trainer->comm() : nullptr;
  if (comm && comm->rank() != 0) {
    trainer->state();  // throws mid-accumulation, like rank 0
    std::vector<ManifestEntry> none;
    write_model("", model, trainer, options.weights_dtype, false, none);
    if (options.optimizer) write_optimizer("", model, *trainer, false, none);
    comm->barrier(model.device().stream());
    return;
  }
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  STRATA_CHECK(!fs::exists(clean), "save_checkpoint: " << clean << " already exists; checkpoints are never "
                                                              "overwritten in place (choose a new directory)");
  const std::string parent = io::parent_dir(clean);
  const std::string base = clean.substr(clean.find_last_of('/') + 1);
  const std::string temp = parent + "/.tmp-" + base + "-" + std::to_string(::getpid()) + "-" +
                           std::to_string(temp_counter++);
  STRATA_CHECK(::mkdir(temp.c_str(), 0755) == 0,
               "save_checkpoint: cannot create " << temp << ": " << detail::errno_string());
  try {
    std::vector<ManifestEntry> manifest;
    write_json_file(temp, kConfigFile, config_json(model), manifest);
    if (trainer) trainer->state();  // throws mid-accumulation, before anything else
    write_model(temp, model, trainer, options.weights_dtype, true, manifest);
    if (trainer) {
      const TrainerState st = trainer->state();
      if (options.optimizer) write_optimizer(temp, model, *trainer, true, manifest);
      write_json_file(temp, kTrainerFile, io::to_json(st, progress, trainer->options()).dump(2) + "\n", manifest);
    }
    Value m = Value::object();
    m.set("format", Value::string(kFormat));
    m.set("version", Value::integer(kVersion));
    Value files = Value::array();
    for (const ManifestEntry& e : manifest) {
      Value f = Value::object();
      f.set("name", Value::string(e.name));
      f.set("bytes", Value::unsigned_integer(e.bytes));
      f.set(e.crc_kind, Value::string(hex8(e.crc)));
      files.push(std::move(f));
    }
    m.set("files", std::move(files));
    io::write_file_synced(temp + "/" + kManifestFile, m.dump(2) + "\n");
    io::fsync_dir(temp);
    STRATA_CHECK(::rename(temp.c_str(), clean.c_str()) == 0,
                 "save_checkpoint: cannot rename " << temp << " to " << clean << ": " << detail::errno_string());
    io::fsync_dir(parent);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(temp, ec);
    throw;
  }
  if (comm) comm->barrier(model.device().stream());
}

bool is_checkpoint(const std::string& dir) { return fs::is_regular_file(dir + "/" + kManifestFile); }

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  CheckpointInfo info;
  info.path = dir;
  const std::string mpath = dir + "/" + kManifestFile;
  STRATA_CHECK(fs::is_regular_file(mpath), dir << " is not a complete strata checkpoint: " << kManifestFile
                                                << " is missing (an interrupted save leaves no manifest)");
  const Value manifest = json::parse(io::read_file(mpath), mpath);
  STRATA_CHECK(manifest.at("format", mpath).as_string(mpath + " format") == kFormat,
               mpath << ": format is not " << kFormat);
  const int64_t version = manifest.at("version", mpath).as_int(mpath + " version");
  STRATA_CHECK(version == kVersion, mpath << ": version " << version << ", this build reads version " << kVersion);
  std::map<std::string, std::string> json_text;
  for (const Value& f : manifest.at("files", mpath).items(mpath + " files")) {
    const std::string name = f.at("name", mpath).as_string(mpath + " name");
    STRATA_CHECK(name.find('/') == std::string::npos && !name.empty() && name[0] != '.',
                 mpath << ": bad file name \"" << name << "\"");
    const std::string path = dir + "/" + name;
    const uint64_t bytes = f.at("bytes", mpath).as_uint(mpath + " bytes of " + name);
    STRATA_CHECK(fs::is_regular_file(path), path << " is listed in the manifest but missing");
    const uint64_t actual = fs::file_size(path);
    STRATA_CHECK(actual == bytes, path << " has " << actual << " bytes, the manifest says " << bytes
                                       << "; the file is truncated or corrupt");
    info.files.emplace_back(name, bytes);
    if (const Value* crc = f.find("crc32c")) {
      std::string text = io::read_file(path);
      const std::string got = hex8(crc32c(text.data(), text.size()));
      STRATA_CHECK(got == crc->as_string(mpath), path << " fails its checksum (CRC32C " << got << ", manifest "
                                                      << crc->as_string(mpath) << "); the file is corrupt");
      json_text[name] = std::move(text);
    }
  }
  STRATA_CHECK(json_text.count(kConfigFile), dir << ": the manifest lists no " << kConfigFile);
  const std::string cpath = dir + "/" + kConfigFile;
  const Value config = json::parse(json_text[kConfigFile], cpath);
  info.precision = precision_from_string(config.at("precision", cpath).as_string(cpath + " precision"));
  info.config = io::model_config_from(config.at("model", cpath), cpath + " model");
  if (json_text.count(kTrainerFile)) {
    const std::string tpath = dir + "/" + kTrainerFile;
    io::trainer_state_from(json::parse(json_text[kTrainerFile], tpath), tpath, info.trainer, info.progress,
                           info.options);
    info.has_trainer = true;
  }
  return info;
}

namespace {
uint32_t manifest_header_crc(const std::string& dir, const std::string& name) {
  const std::string mpath = dir + "/" + kManifestFile;
  const Value manifest = json::parse(io::read_file(mpath), mpath);
  for (const Value& f : manifest.at("files", mpath).items(mpath))
    if (f.at("name", mpath).as_string(mpath) == name) {
      const std::string& s = f.at("header_crc32c", mpath).as_string(mpath);
      return uint32_t(std::stoul(s, nullptr, 16));
    }
  STRATA_FAIL(mpath << ": " << name << " is not listed");
}

// Opens a listed safetensors file and checks its header against the manifest.
std::unique_ptr<SafetensorsReader> open_checked(const std::string& dir, const std::string& name) {
  auto r = std::make_unique<SafetensorsReader>(dir + "/" + name);
  const uint32_t want = manifest_header_crc(dir, name);
  STRATA_CHECK(r->header_crc32c() == want, r->path() << ": header fails its checksum (CRC32C "
                                                     << hex8(r->header_crc32c()) << ", manifest " << hex8(want)
                                                     << "); the file is corrupt");
  return r;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void expect_tensor(const SafetensorsReader& r, const std::string& name, const std::vector<int64_t>& shape) {
  const SafetensorsEntry& e = r.entry(name);
  STRATA_CHECK(e.shape == shape, r.path() << ": tensor \"" << name << "\" has shape " << shape_str(e.shape)
                                          << ", the model expects " << shape_str(shape)
                                          << "; the checkpoint is for another model");
}
}  // namespace

namespace {
std::string tensor_what(const SafetensorsReader& r, const std::string& name) {
  return r.path() + ": tensor \"" + name + "\"";
}
}  // namespace

CheckpointInfo load_checkpoint(const std::string& dir, Model& model, Trainer* trainer, LoadScope scope) {
  CheckpointInfo info = read_checkpoint_info(dir);
  STRATA_CHECK(trainer || model.params_resident(),
               dir << ": the model's parameters live in its store (offloaded, ZeRO-3, or built Init::deferred); "
                      "load the checkpoint with the model's Trainer");
  const bool resume = trainer && scope == LoadScope::resume;
  // Dropout rates do not shape the parameters: a checkpoint may be evaluated or
  // fine-tuned with others. Everything else must match.
  auto shape_of = [](ModelConfig c) {
    c.dropout_embedding = c.dropout_attention = c.dropout_residual = 0.0f;
    return model_config_to_json(c);
  };
  STRATA_CHECK(shape_of(info.config) == shape_of(model.config()),
               dir << ": the checkpoint's model config differs from the model's; build the model from "
                      "read_checkpoint_info(dir).config. Checkpoint: "
                   << info.config.describe() << "; model: " << model.config().describe());
  if (resume)
    STRATA_CHECK(info.has_trainer, dir << " holds weights only (no " << kTrainerFile
                                       << "); start from it with LoadScope::weights, or load it without a Trainer");
  if (trainer) trainer->state();  // throws mid-accumulation, before any state changes
  auto weights = open_checked(dir, kModelFile);
  for (const ParamInfo& p : model.parameters()) expect_tensor(*weights, p.name, p.shape);
  STRATA_CHECK(weights->tensors().size() == model.parameters().size(),
               weights->path() << ": " << weights->tensors().size() << " tensors, the model has "
                               << model.parameters().size() << " parameters");
  std::unique_ptr<SafetensorsReader> opt;
  if (resume) {
    opt = open_checked(dir, kOptimizerFile);
    auto it = opt->metadata().find("strata.layout");
    STRATA_CHECK(it != opt->metadata().end() && it->second == layout_fingerprint(model),
                 opt->path() << ": written for another parameter layout (strata.layout differs); "
                                "the optimizer state cannot be mapped onto this model");
    for (int u = 0; u < model.num_units(); ++u)
      for (const char* part : {"master", "exp_avg", "exp_avg_sq"})
        expect_tensor(*opt, model.unit_name(u) + "." + part, {model.unit_numel(u)});
  }
  // Data: weights first; in fp32 the master IS the weights, so the optimizer file's
  // master then overwrites them exactly (the weights file may be bf16).
  // With a trainer, one unit at a time through it: ZeRO keeps each rank's shards,
  // offload writes the tiers, and a new run's optimizer starts from the weights.
  if (trainer && (!resume || trainer->comm() || model.store())) {
    std::vector<float> unit;  // host arrays: the Trainer moves them to its device
    for (int u = 0; u < model.num_units(); ++u) {
      unit.assign(size_t(model.unit_numel(u)), 0.0f);  // the padding stays 0
      for (const ParamInfo& p : model.parameters())
        if (p.unit == u) {
          weights->read(p.name, TensorView(unit.data() + p.offset, DType::f32, {p.numel()}, nullptr));
          io::require_finite(unit.data() + p.offset, size_t(p.numel()), tensor_what(*weights, p.name));
        }
      if (resume) trainer->load_unit_parameters(u, unit.data());
      else trainer->start_from_parameters(u, unit.data());
    }
  } else {
    std::vector<char> staged;
    for (const ParamInfo& p : model.parameters()) {
      const TensorView v = model.parameter(p.name);
      const TensorView h = host_view(v, staged);
      weights->read(p.name, h);
      io::require_finite(h.data, io::float_format(h.dtype), size_t(h.numel()), tensor_what(*weights, p.name));
      copy_from_host(v, staged);
    }
  }
  if (resume) {
    std::vector<float> master, m, v;
    for (int u = 0; u < model.num_units(); ++u) {
      const std::string unit = model.unit_name(u);
      for (auto [part, dst] : {std::pair{".master", &master}, {".exp_avg", &m}, {".exp_avg_sq", &v}}) {
        dst->assign(size_t(model.unit_numel(u)), 0.0f);
        opt->read(unit + part, TensorView(dst->data(), DType::f32, {model.unit_numel(u)}, nullptr));
        io::require_finite(dst->data(), dst->size(), tensor_what(*opt, unit + part));
      }
      trainer->load_optimizer_state(u, master.data(), m.data(), v.data());
    }
    trainer->load_state(info.trainer);
  }
  return info;
}

void verify_checkpoint(const std::string& dir) {
  const CheckpointInfo info = read_checkpoint_info(dir);
  for (const auto& [name, bytes] : info.files) {
    if (name.size() < 12 || name.substr(name.size() - 12) != ".safetensors") continue;
    open_checked(dir, name)->verify();
  }
}

}  // namespace strata
