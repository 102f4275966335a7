// Instruction data: JSONL of {"prompt": ..., "response": ...} pairs -> token shards
// with a loss mask beside each (TokenDataset, loss_mask_path), so training puts the
// loss on the responses only.
// Invariant: every line is checked before anything is written; a bad line is refused
// with its file, line number and key.
#include <fstream>
#include <nlohmann/json.hpp>

#include "strata/data.h"
#include "strata/error.h"

namespace strata {

namespace {

struct Example {
  std::string prompt, response;
};

std::vector<Example> read_examples(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in, "prepare_instructions: cannot read '" << path << "': " << detail::errno_string());
  std::vector<Example> examples;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      STRATA_FAIL(path << ":" << number << ": not a JSON object (" << e.what()
                       << "); each line must be {\"prompt\": \"...\", \"response\": \"...\"}");
    }
    STRATA_CHECK(j.is_object(), path << ":" << number << ": a JSON " << j.type_name()
                                     << ", not an object with \"prompt\" and \"response\"");
    Example ex;
    for (auto [key, field] : {std::pair{"prompt", &ex.prompt}, std::pair{"response", &ex.response}}) {
      STRATA_CHECK(j.contains(key), path << ":" << number << ": no \"" << key
                                         << "\" key; each line needs \"prompt\" and \"response\"");
      STRATA_CHECK(j[key].is_string(), path << ":" << number << ": \"" << key << "\" is a "
                                            << j[key].type_name() << ", not a string");
      *field = j[key].get<std::string>();
    }
    STRATA_CHECK(!ex.response.empty(), path << ":" << number << ": \"response\" is empty; "
                                               "an example needs a response to learn");
    examples.push_back(std::move(ex));
  }
  STRATA_CHECK(!examples.empty(), "prepare_instructions: '" << path << "' holds no examples");
  return examples;
}

}  // namespace

InstructionTokens encode_instruction(const Tokenizer& tokenizer, std::string_view prompt,
                                     std::string_view response, uint32_t eos) {
  InstructionTokens out;
  out.tokens = tokenizer.encode(prompt, /*add_special_tokens=*/true);
  out.loss_mask.assign(out.tokens.size(), 0);
  const std::vector<uint32_t> r = tokenizer.encode(response);
  out.tokens.insert(out.tokens.end(), r.begin(), r.end());
  out.tokens.push_back(eos);
  out.loss_mask.resize(out.tokens.size(), 1);
  return out;
}

PrepareResult prepare_instructions(const std::string& jsonl, const std::string& prefix,
                                   double val_fraction, const Tokenizer& tokenizer, uint32_t eos) {
  STRATA_CHECK(!prefix.empty(), "prepare_instructions: empty output prefix; give one such as "
                                "'data/sft' for data/sft_train.bin and data/sft_val.bin");
  STRATA_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
               "prepare_instructions: val_fraction " << val_fraction << " must be in [0, 1)");
  STRATA_CHECK(int64_t(eos) < tokenizer.vocab_size(),
               "prepare_instructions: the end-of-sequence id " << eos << " is outside the "
                                                               "vocabulary of " << tokenizer.vocab_size());
  const std::vector<Example> examples = read_examples(jsonl);
  // The last floor(n * val_fraction) examples are held out.
  const size_t n_val = size_t(double(examples.size()) * val_fraction);
  std::vector<uint32_t> tokens[2];
  std::vector<uint16_t> masks[2];
  for (size_t i = 0; i < examples.size(); ++i) {
    const int split = i + n_val >= examples.size();
    const InstructionTokens t = encode_instruction(tokenizer, examples[i].prompt, examples[i].response, eos);
    tokens[split].insert(tokens[split].end(), t.tokens.begin(), t.tokens.end());
    masks[split].insert(masks[split].end(), t.loss_mask.begin(), t.loss_mask.end());
  }
  PrepareResult r;
  r.train_path = prefix + "_train.bin";
  r.val_path = prefix + "_val.bin";
  r.train_tokens = int64_t(tokens[0].size());
  r.val_tokens = int64_t(tokens[1].size());
  const std::string paths[2] = {r.train_path, r.val_path};
  for (int split = 0; split < 2; ++split) {
    write_token_shard(paths[split], std::span<const uint32_t>(tokens[split]), tokenizer.vocab_size());
    write_token_shard(loss_mask_path(paths[split]), std::span<const uint16_t>(masks[split]));
  }
  return r;
}

}  // namespace strata
