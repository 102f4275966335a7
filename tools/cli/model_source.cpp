// Loading a model for eval, sample and convert (see model_source.h).
#include "model_source.h"

#include "args.h"

#include <cstdio>
#include <filesystem>

namespace cli {

namespace fs = std::filesystem;

std::unique_ptr<strata::Device> make_device(const std::string& spec) {
  if (spec == "cpu") return strata::Device::cpu(0);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    int64_t index = 0;
    std::string error;
    if (spec != "cuda" && !parse_int(spec.substr(5), 0, 1023, index, error))
      throw strata::Error("--device " + spec + ": the device index " + error);
    return strata::Device::cuda(int(index));
  }
  throw strata::Error("--device: '" + spec + "' is not a device (expected cpu or cuda:N)");
}

ModelSource find_model(const std::string& path) {
  ModelSource src;
  if (strata::is_checkpoint(path)) src.checkpoint = path;
  else if (fs::is_directory(path)) src.checkpoint = strata::latest_checkpoint(path);
  if (!src.checkpoint.empty()) {
    const strata::CheckpointInfo info = strata::read_checkpoint_info(src.checkpoint);
    src.config = info.config;
    src.precision = info.precision;
    src.description = "strata checkpoint " + src.checkpoint;
    return src;
  }
  if (fs::is_regular_file(path + "/config.json")) {
    src.hf_dir = path;
    src.config = strata::read_hf_config(path, &src.layout);
    src.description = std::string("Hugging Face ") + strata::hf_layout_name(src.layout) + " " + path;
    return src;
  }
  throw strata::Error(path + " is neither a strata checkpoint, a run directory with one, nor a Hugging Face "
                             "directory (config.json + model.safetensors)");
}

void load_weights(const ModelSource& source, strata::Model& model, strata::Trainer* trainer) {
  if (!source.checkpoint.empty()) strata::load_checkpoint(source.checkpoint, model, trainer, strata::LoadScope::weights);
  else strata::import_hf(model, source.hf_dir, source.layout, trainer);
}

LoadedModel load_model(const std::string& path, const std::string& precision, bool inference,
                       const std::string& device) {
  const ModelSource src = find_model(path);
  LoadedModel out;
  out.device = make_device(device);
  strata::ModelConfig c = src.config;
  if (inference) c.dropout_embedding = c.dropout_attention = c.dropout_residual = 0.0f;
  const strata::Precision p = precision.empty() ? src.precision : strata::precision_from_string(precision);
  out.model = std::make_unique<strata::Model>(c, *out.device, p, 0);
  load_weights(src, *out.model);
  out.source = src.description;
  out.checkpoint = src.checkpoint;
  return out;
}

int fail(const char* command, const std::exception& e) {
  std::fprintf(stderr, "strata %s: %s\n", command, e.what());
  return 1;
}

}  // namespace cli
