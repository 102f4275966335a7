// Where the subcommands get a model from: a strata checkpoint, a run directory (its
// newest checkpoint), or a Hugging Face directory (config.json + model.safetensors,
// GPT-2 or LLaMA). The model lives on the device named by --device (cpu, cuda:N),
// owned by the result.
// Invariant: the returned model holds the source's weights, with the source's config
// except for dropout, which is zeroed when `inference` is set.
#pragma once
#include <memory>
#include <string>

#include "strata/strata.h"

namespace cli {

struct LoadedModel {
  std::unique_ptr<strata::Device> device;
  std::unique_ptr<strata::Model> model;
  std::string source;  // "strata checkpoint DIR" / "Hugging Face gpt2 DIR"
  std::string checkpoint;  // the strata checkpoint directory, when it is one
};

// "cpu" or "cuda:N" (the --device flag); a strata::Error naming the flag otherwise,
// or when the device is not there.
std::unique_ptr<strata::Device> make_device(const std::string& spec);

// A model source found but not yet read: its config from its config files alone.
struct ModelSource {
  std::string checkpoint;  // a strata checkpoint directory, or "" for Hugging Face
  std::string hf_dir;      // a Hugging Face directory, or ""
  strata::HfLayout layout = strata::HfLayout::gpt2;
  strata::ModelConfig config;
  strata::Precision precision = strata::Precision::fp32;  // the checkpoint's; fp32 for Hugging Face
  std::string description;  // "strata checkpoint DIR" / "Hugging Face gpt2 DIR"
};
// Reads the config files of `path` (no weights); throws when it is no model source.
ModelSource find_model(const std::string& path);
// The source's weights into `model` (its config must match): with a trainer, unit by
// unit into the trainer's store as its starting point (strata::LoadScope::weights /
// import_hf with a trainer), so the model never needs to be resident.
void load_weights(const ModelSource& source, strata::Model& model, strata::Trainer* trainer = nullptr);

// precision "" keeps the checkpoint's (fp32 for Hugging Face sources). Weights that
// hold NaN or Inf are refused, naming the tensor.
LoadedModel load_model(const std::string& path, const std::string& precision, bool inference,
                       const std::string& device = "cpu");

// Prints a one-line summary of a strata::Error-carrying exception and returns 1.
int fail(const char* command, const std::exception& e);

}  // namespace cli
