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

LoadedModel load_model(const std::string& path, const std::string& precision, bool inference,
                       const std::string& device) {
  LoadedModel out;
  out.device = make_device(device);
  std::string ck;
  if (strata::is_checkpoint(path)) ck = path;
  else if (fs::is_directory(path)) ck = strata::latest_checkpoint(path);
  if (!ck.empty()) {
    strata::CheckpointInfo info = strata::read_checkpoint_info(ck);
    strata::ModelConfig c = info.config;
    if (inference) c.dropout_embedding = c.dropout_attention = c.dropout_residual = 0.0f;
    const strata::Precision p = precision.empty() ? info.precision : strata::precision_from_string(precision);
    out.model = std::make_unique<strata::Model>(c, *out.device, p, 0);
    strata::load_checkpoint(ck, *out.model);
    out.source = "strata checkpoint " + ck;
    out.checkpoint = ck;
    return out;
  }
  if (fs::is_regular_file(path + "/config.json")) {
    strata::HfLayout layout;
    strata::ModelConfig c = strata::read_hf_config(path, &layout);
    if (inference) c.dropout_embedding = c.dropout_attention = c.dropout_residual = 0.0f;
    const strata::Precision p = precision.empty() ? strata::Precision::fp32 : strata::precision_from_string(precision);
    out.model = std::make_unique<strata::Model>(c, *out.device, p, 0);
    strata::import_hf(*out.model, path, layout);
    out.source = std::string("Hugging Face ") + strata::hf_layout_name(layout) + " " + path;
    return out;
  }
  throw strata::Error(path + " is neither a strata checkpoint, a run directory with one, nor a Hugging Face "
                             "directory (config.json + model.safetensors)");
}

int fail(const char* command, const std::exception& e) {
  std::fprintf(stderr, "strata %s: %s\n", command, e.what());
  return 1;
}

}  // namespace cli
