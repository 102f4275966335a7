// Where the subcommands get a model from: a strata checkpoint, a run directory (its
// newest checkpoint), or a Hugging Face directory (config.json + model.safetensors,
// GPT-2 or LLaMA). The model lives on a CPU device owned by the result.
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

// precision "" keeps the checkpoint's (fp32 for Hugging Face sources).
LoadedModel load_model(const std::string& path, const std::string& precision, bool inference);

// Prints a one-line summary of a strata::Error-carrying exception and returns 1.
int fail(const char* command, const std::exception& e);

}  // namespace cli
