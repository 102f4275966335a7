// `strata train` on several CPU devices and with its state offloaded, as `strata plan`
// proposes: ZeRO-3 over 2 devices with half the batch each gives the losses of one
// device (to rounding), ZeRO-3 with every tier on NVMe and one device's offloaded
// store give them bit for bit (and checkpoint and resume, and start from a checkpoint's
// or a Hugging Face directory's weights read into NVMe tiers), --plan auto
// takes strata plan's placement, and placements the build cannot checkpoint are
// refused before anything runs.
#include <catch2/catch.hpp>
#include <fstream>
#include <utility>

#include "cli/cli_support.h"
#include "strata/device.h"
#include "support/skip.h"

using namespace strata::test;
using Catch::Contains;

namespace {

struct Run {
  Cli cli;
  std::string data;
  Run() : data(cli.prepare_corpus(2000)) { REQUIRE(!data.empty()); }
  CliResult train(const std::string& out, std::vector<std::string> more) const {
    std::vector<std::string> a = {"train", "--data", data, "--out", cli.file(out), "--n-layers", "2", "--n-heads", "2",
                                  "--d-model", "32", "--d-mlp", "64", "--seq", "16", "--threads", "1", "--no-progress",
                                  "--schedule", "constant", "--warmup", "0", "--stats-every", "0", "--steps", "3"};
    a.insert(a.end(), more.begin(), more.end());
    return cli.run(a);
  }
};

std::vector<std::string> losses(const CliResult& r) {
  std::vector<std::string> v;
  for (const auto& [step, loss] : step_losses(r.out)) v.push_back(loss);
  return v;
}

}  // namespace

TEST_CASE("cli train: ZeRO-3 on 2 devices and on NVMe give the single-device losses", "[cli][nvme]") {
  Run t;
  const CliResult one = t.train("one", {"--batch", "8"});
  REQUIRE(one.status == 0);
  REQUIRE(losses(one).size() == 3);
  const CliResult two = t.train("two", {"--batch", "4", "--devices", "2", "--zero-stage", "3"});
  INFO(two.out << two.err);
  REQUIRE(two.status == 0);
  // Two half batches' gradients are summed in another order than one batch's: equal
  // to rounding (placement, below, is bitwise).
  const std::vector<std::string> a = losses(two), b = losses(one);
  REQUIRE(a.size() == b.size());  // rank 0 alone prints
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::stod(a[i]) == Approx(std::stod(b[i])).epsilon(1e-5));
  CHECK_THAT(two.out, Contains("2 cpu devices, ZeRO stage 3"));
  std::filesystem::create_directories(t.cli.file("swap"));
  const CliResult nvme = t.train("nvme", {"--batch", "8", "--zero-stage", "3", "--params", "nvme", "--grads", "nvme",
                                          "--optimizer", "nvme", "--nvme", t.cli.file("swap"), "--pinned", "64M"});
  INFO(nvme.out << nvme.err);
  REQUIRE(nvme.status == 0);
  CHECK(losses(nvme) == losses(one));
  CHECK(std::filesystem::exists(t.cli.file("nvme/" + checkpoint_name(3))));
  // A resume with another number of devices changes the global batch: refused by name.
  const CliResult more = t.train("two", {"--batch", "4", "--devices", "3", "--zero-stage", "3", "--steps", "4"});
  CHECK(more.status == 1);
  CHECK_THAT(more.err, Contains("--devices was 2 in the checkpointed run and is now 3"));
}

TEST_CASE("cli train: --plan auto takes strata plan's placement", "[cli][nvme]") {
  Run t;
  std::filesystem::create_directories(t.cli.file("swap"));
  // A deeper model, and a RAM budget below its all-on-device state (about 23 MB with
  // activations; one unit's staging is about 1 MB): the plan chooses NVMe.
  const std::vector<std::string> deep = {"--n-layers", "24", "--d-model", "64", "--d-mlp", "128", "--batch", "2"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), deep.begin(), deep.end());
    return more;
  };
  const CliResult r = t.train("auto", with({"--plan", "auto", "--ram", "12M", "--nvme", t.cli.file("swap")}));
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Contains("--plan auto: placement nvme (params nvme, grads nvme, optimizer nvme)"));
  const CliResult plain = t.train("auto-device", with({"--plan", "auto"}));
  REQUIRE(plain.status == 0);
  CHECK_THAT(plain.out, Contains("--plan auto: placement device (params device, grads device, optimizer device)"));
  CHECK(losses(plain) == losses(r));
}

TEST_CASE("cli train: one device with its state offloaded trains, checkpoints and resumes bit for bit",
          "[cli][nvme]") {
  Run t;
  const CliResult resident = t.train("resident", {"--batch", "4", "--steps", "4"});
  REQUIRE(resident.status == 0);
  std::filesystem::create_directories(t.cli.file("swap"));
  const std::vector<std::string> offload = {"--batch", "4", "--params", "host", "--grads", "nvme", "--optimizer",
                                            "nvme", "--nvme", t.cli.file("swap"), "--pinned", "64M"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), offload.begin(), offload.end());
    return more;
  };
  const CliResult first = t.train("off", with({"--steps", "2"}));
  INFO(first.out << first.err);
  REQUIRE(first.status == 0);
  CHECK(std::filesystem::exists(t.cli.file("off/" + checkpoint_name(2))));
  const CliResult resumed = t.train("off", with({"--steps", "4"}));
  INFO(resumed.out << resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK_THAT(resumed.out, Contains("resuming from"));
  std::vector<std::string> all = losses(first), rest = losses(resumed);
  all.insert(all.end(), rest.begin(), rest.end());
  CHECK(all == losses(resident));
}

TEST_CASE("cli train: placements that cannot run or checkpoint are refused at parse time", "[cli]") {
  Run t;
  const std::vector<std::pair<std::vector<std::string>, std::string>> table = {
      {{"--zero-stage", "1", "--grads", "host"}, "--grads host needs --zero-stage 2 or 3"},
      {{"--zero-stage", "2", "--params", "host"}, "--params host needs --zero-stage 3"},
      {{"--zero-stage", "3", "--optimizer", "nvme"}, "a tier on nvme needs --nvme DIR"},
      {{"--nvme", "/tmp"}, "--nvme is given but no tier is on nvme"},
      {{"--zero-stage", "3", "--params", "host", "--pinned", "lots"}, "--pinned: expected a size like 256M"},
      {{"--zero-stage", "4"}, "--zero-stage: 4 is out of range (expected an integer in [0, 3])"},
      {{"--plan", "auto", "--params", "host"}, "--plan auto chooses --params"},
  };
  for (const auto& [flags, message] : table) {
    INFO(flags[0] << " " << flags[1]);
    const CliResult r = t.train("refused", flags);
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Contains(message));
  }
  CHECK_FALSE(std::filesystem::exists(t.cli.file("refused")));
}

TEST_CASE("cli train: ranks on --device cuda are GPUs, never silently CPU devices", "[cli]") {
  if (strata::cuda_device_count() > 0) return skip_test("a GPU is present: this case checks the failure without one");
  Run t;
  for (const std::vector<std::string>& flags : {std::vector<std::string>{"--device", "cuda:0", "--zero-stage", "1"},
                                                std::vector<std::string>{"--device", "cuda:0", "--devices", "2"}}) {
    const CliResult r = t.train("gpu", flags);
    INFO(r.out << r.err);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Contains("no CUDA device"));
    CHECK(step_losses(r.out).empty());
  }
}

TEST_CASE("cli train: a run started from a Hugging Face Mistral exports as mistral", "[cli]") {
  Run t;
  const std::vector<std::string> llama = {"--preset", "llama-60m", "--vocab-size", "256", "--steps", "1"};
  REQUIRE(t.train("base", llama).status == 0);
  const std::string hf = t.cli.file("base-hf"), tuned = t.cli.file("tuned-hf");
  REQUIRE(t.cli.run({"convert", "--from", t.cli.file("base/" + checkpoint_name(1)), "--to", hf, "--format", "hf"})
              .status == 0);
  // A windowless Mistral has Llama's shape: relabel the export as one.
  std::string config = read_file(hf + "/config.json");
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"\"llama\"", "\"mistral\""},
                                 {"LlamaForCausalLM", "MistralForCausalLM"}}) {
    const size_t at = config.find(from);
    REQUIRE(at != std::string::npos);
    config.replace(at, from.size(), to);
  }
  std::ofstream(hf + "/config.json") << config;
  std::vector<std::string> more = llama;
  more.insert(more.end(), {"--init-from", hf});
  const CliResult r = t.train("tuned", more);
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  const CliResult conv =
      t.cli.run({"convert", "--from", t.cli.file("tuned/" + checkpoint_name(1)), "--to", tuned, "--format", "hf"});
  INFO(conv.out << conv.err);
  REQUIRE(conv.status == 0);
  CHECK_THAT(read_file(tuned + "/config.json"), Contains("\"mistral\"") && Contains("MistralForCausalLM"));
}

TEST_CASE("cli train: --init-from a checkpoint or a Hugging Face directory into NVMe tiers trains as resident",
          "[cli][nvme]") {
  Run t;
  REQUIRE(t.train("base", {"--steps", "2"}).status == 0);
  const std::string base = t.cli.file("base/" + checkpoint_name(2)), hf = t.cli.file("base-hf");
  const CliResult conv = t.cli.run({"convert", "--from", base, "--to", hf, "--format", "hf"});
  INFO(conv.out << conv.err);
  REQUIRE(conv.status == 0);
  std::filesystem::create_directories(t.cli.file("swap"));
  const std::vector<std::string> nvme = {"--params", "nvme", "--grads", "nvme", "--optimizer", "nvme",
                                         "--nvme", t.cli.file("swap"), "--pinned", "64M"};
  const std::string sources[] = {base, hf};
  for (int i = 0; i < 2; ++i) {
    const std::string& from = sources[i];
    INFO(from);
    const CliResult resident = t.train("res" + std::to_string(i), {"--init-from", from});
    INFO(resident.out << resident.err);
    REQUIRE(resident.status == 0);
    std::vector<std::string> more = {"--init-from", from};
    more.insert(more.end(), nvme.begin(), nvme.end());
    const CliResult offloaded = t.train("off" + std::to_string(i), more);
    INFO(offloaded.out << offloaded.err);
    REQUIRE(offloaded.status == 0);
    CHECK_THAT(offloaded.out, Contains("initial weights from"));
    CHECK(losses(offloaded) == losses(resident));
    CHECK(losses(resident).size() == 3);
  }
}
