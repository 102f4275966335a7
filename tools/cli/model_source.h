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

// precision "" keeps the checkpoint's (fp32 for Hugging Face sources). Weights that
// hold NaN or Inf are refused, naming the tensor.
LoadedModel load_model(const std::string& path, const std::string& precision, bool inference,
                       const std::string& device = "cpu");

// Prints a one-line summary of a strata::Error-carrying exception and returns 1.
int fail(const char* command, const std::exception& e);

}  // namespace cli
