// `strata sample` finds the tokenizer an HF export carries: a SentencePiece
// tokenizer.model beside the weights (as `strata convert --tokenizer` writes it) is used
// for text prompts, exactly as --tokenizer naming the same file; without any tokenizer
// file a 1000-token vocabulary is refused with the way out.
#include <catch2/catch.hpp>

#include <filesystem>

#include "cli/cli_support.h"
#include "data/tokenizer_fixtures.h"

using namespace strata::test;
using Catch::Contains;

// A 1-layer LLaMA with a 1000-token vocabulary trained 2 steps into cli.file("run").
static void train_tiny_run(Cli& cli, const std::string& spm) {
  REQUIRE(cli.run({"prepare", "--tokenizer", spm, "--out", cli.file("data")}).status == 0);
  const CliResult train = cli.run({"train", "--data", cli.file("data_train.bin"), "--out", cli.file("run"),
                                   "--preset", "llama-60m", "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
                                   "--d-mlp", "64", "--vocab-size", "1000", "--max-seq", "64", "--seq", "16",
                                   "--batch", "2", "--steps", "2", "--warmup", "0", "--threads", "1", "--no-progress"});
  INFO(train.err);
  REQUIRE(train.status == 0);
}

TEST_CASE("cli sample: an HF directory's tokenizer.model encodes the prompt and decodes the output", "[cli]") {
  Cli cli;
  const std::string spm = fixture("spm.model");
  train_tiny_run(cli, spm);
  const std::string hf = cli.file("hf");
  REQUIRE(cli.run({"convert", "--from", cli.file("run"), "--to", hf, "--format", "hf", "--tokenizer", spm}).status == 0);
  REQUIRE(std::filesystem::exists(hf + "/tokenizer.model"));

  const std::vector<std::string> sample = {"sample", "--model", hf, "--prompt", "The cat", "--tokens", "8",
                                           "--temperature", "0", "--threads", "1"};
  const CliResult found = cli.run(sample);
  INFO(found.err);
  REQUIRE(found.status == 0);
  CHECK(found.out.rfind("The cat", 0) == 0);  // the prompt, decoded back, starts the stream
  std::vector<std::string> named = sample;
  named.insert(named.end(), {"--tokenizer", spm});
  CHECK(cli.run(named).out == found.out);

  std::filesystem::remove(hf + "/tokenizer.model");
  const CliResult none = cli.run(sample);
  CHECK(none.status == 2);
  CHECK_THAT(none.err, Contains("no tokenizer for this model's 1000-token vocabulary; give --tokenizer FILE"));
}

TEST_CASE("cli sample: prompts of different lengths in one batch each give what they give alone", "[cli]") {
  Cli cli;
  train_tiny_run(cli, fixture("spm.model"));
  const std::vector<std::string> base = {"sample", "--model", cli.file("run"), "--tokens", "6", "--temperature", "0",
                                         "--threads", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    const CliResult r = cli.run(args);
    INFO(r.err);
    REQUIRE(r.status == 0);
    return r.out;
  };
  const std::string short_alone = with({"--prompt-ids", "5,9"}), long_alone = with({"--prompt-ids", "7,3,12,40,2"});
  CHECK(with({"--prompt-ids", "5,9", "--prompt-ids", "7,3,12,40,2"}) ==
        "--- sample 0\n" + short_alone + "--- sample 1\n" + long_alone);
}
