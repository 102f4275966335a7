// Every flag is checked where it is parsed: each bad value below is refused with
// exit status 2 and a message naming the flag, the value and what is allowed,
// before any file is read or written.
#include <catch2/catch.hpp>

#include "cli/cli_support.h"

using namespace strata::test;
using Catch::Contains;

namespace {
struct BadFlag {
  std::vector<std::string> args;
  std::string message;
};
}  // namespace

TEST_CASE("cli: out-of-range, non-finite and malformed flag values are refused by name", "[cli]") {
  Cli cli;
  const std::string out = cli.file("run");
  const std::vector<std::string> train = {"train", "--data", cli.file("none.bin"), "--out", out};
  auto with = [](std::vector<std::string> base, std::vector<std::string> more) {
    base.insert(base.end(), more.begin(), more.end());
    return base;
  };
  const std::vector<BadFlag> table = {
      {with(train, {"--steps", "99999999999999999999"}),
       "--steps: 99999999999999999999 is out of range (expected an integer at least 1)"},
      {with(train, {"--steps", "0"}), "--steps: 0 is out of range (expected an integer at least 1)"},
      {with(train, {"--steps", "1.5"}), "--steps: '1.5' is not an integer"},
      {with(train, {"--min-lr-ratio", "-1"}), "--min-lr-ratio: -1 is out of range (expected a number in [0, 1])"},
      {with(train, {"--eval-batches", "0"}), "--eval-batches: 0 is out of range (expected an integer at least 1)"},
      {with(train, {"--warmup", "-5"}), "--warmup: -5 is out of range (expected an integer at least 0)"},
      {with(train, {"--dropout", "nan"}), "--dropout: nan is not finite"},
      {with(train, {"--dropout", "-0.5"}), "--dropout: -0.5 is out of range (expected -1 for the preset's"},
      {with(train, {"--threads", "-1"}), "--threads: -1 is out of range (expected an integer in [0, 1024])"},
      {with(train, {"--threads", "100000"}), "--threads: 100000 is out of range (expected an integer in [0, 1024])"},
      {with(train, {"--lr", "inf"}), "--lr: inf is not finite (expected a number in [0, 10])"},
      {with(train, {"--beta2", "1"}), "--beta1 and --beta2 must be below 1"},
      {with(train, {"--weights-dtype", "f16"}), "--weights-dtype: 'f16' is not one of f32 | bf16"},
      {with(train, {"--precision", "fp8"}), "--precision: 'fp8' is not one of fp32 | bf16 | fp16"},
      {with(train, {"--schedule", "linear"}), "--schedule: 'linear' is not one of constant | cosine | wsd"},
      {with(train, {"--allow-change", "model"}), "--allow-change: 'model' is not a setting a resume can change"},
      {with(train, {"--no-such-flag"}), "--no-such-flag"},
      {{"train", "--out", out}, "--data and --out are required"},
      {{"sample", "--model", out, "--tokens", "-5"}, "--tokens: -5 is out of range (expected an integer in [1, "},
      {{"sample", "--model", out, "--prompt-ids", "1,,2"}, "--prompt-ids '1,,2': id 2: '' is not an integer"},
      {{"sample", "--model", out, "--prompt-ids", "1,x"}, "--prompt-ids '1,x': id 2: 'x' is not an integer"},
      {{"sample", "--model", out, "--prompt-ids", "1,2,"}, "--prompt-ids '1,2,': expected token ids separated by commas"},
      {{"sample", "--model", out, "--temperature", "-1"}, "--temperature: -1 is out of range"},
      {{"eval", "--model", out, "--data", out, "--batch", "0"}, "--batch: 0 is out of range"},
      {{"plan", "--preset", "demo", "--devices", "0"}, "--devices: 0 is out of range (expected an integer in [1, 1024])"},
      {{"plan", "--preset", "demo", "--placement", "disk"}, "--placement: 'disk' is not one of device | host | nvme"},
      {{"convert", "--from", out, "--to", out, "--dtype", "f16"}, "--dtype: 'f16' is not one of f32 | bf16"},
      {{"prepare", "--out", out, "--val-fraction", "1"}, "--val-fraction: 1 is out of range"},
      {{"prepare", "--out", out, "--val-fraction", "nan"}, "--val-fraction: nan is not finite"},
  };
  for (const BadFlag& b : table) {
    std::string line;
    for (const std::string& a : b.args) line += a + " ";
    INFO("strata " << line);
    const CliResult r = cli.run(b.args);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Contains(b.message));
    CHECK_FALSE(std::filesystem::exists(out));  // nothing created before the flags are good
  }
}

TEST_CASE("cli: a config file's values are checked like the command line's, with file and line", "[cli]") {
  Cli cli;
  const std::string cfg = cli.file("run.cfg");
  const std::string text = "# a comment\nsteps = 10\nwarmup = -3\n";
  write_bytes(cfg, text.data(), text.size());
  const CliResult r = cli.run({"train", "--config", cfg, "--data", "x", "--out", cli.file("run")});
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains(cfg + ":3: --warmup: -3 is out of range"));
  // The command line overrides the file: the bad value is never used.
  const CliResult ok = cli.run({"train", "--config", cfg, "--warmup", "2", "--data", cli.file("missing.bin"), "--out",
                                cli.file("run")});
  CHECK(ok.status == 1);  // got past the flags, to the missing data
  CHECK_THAT(ok.err, Contains("missing.bin"));
}

TEST_CASE("cli: prepare refuses empty input instead of writing empty shards", "[cli]") {
  Cli cli;
  write_bytes(cli.file("empty.txt"), "", 0);
  const CliResult r = cli.run({"prepare", "--out", cli.file("data"), cli.file("empty.txt")});
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("the input files hold no text"));
  CHECK_FALSE(std::filesystem::exists(cli.file("data_train.bin")));
}

TEST_CASE("cli: --help lists every flag with its allowed values", "[cli]") {
  Cli cli;
  const CliResult r = cli.run({"train", "--help"});
  CHECK(r.status == 0);
  for (const char* flag : {"--data", "--out", "--steps", "--weights-dtype", "--allow-change", "--device", "--config",
                           "--no-progress", "fp32 | bf16 | fp16"})
    CHECK_THAT(r.out, Contains(flag));
}
