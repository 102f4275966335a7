// Checkpoints: exact resume (N steps, save, M more == N+M uninterrupted, bitwise:
// losses, weights, optimizer state; data order, dropout and the fp16 loss scale
// included), corrupt / truncated / mismatched checkpoints rejected naming the file
// and tensor, weights-only checkpoints, and run directories keeping the last K.
#include <catch2/catch.hpp>
#include <filesystem>

#include "io_support.h"

using namespace strata;
using namespace strata::test;
namespace fs = std::filesystem;

namespace {

ModelConfig dropout_config(const std::string& arch) {
  ModelConfig c = tiny_config(arch);
  c.dropout_embedding = 0.1f;
  c.dropout_attention = 0.1f;
  c.dropout_residual = 0.1f;
  return c;
}

TrainOptions resume_options() {
  TrainOptions o;
  o.grad_accum = 2;
  o.adamw.lr = 1e-2f;
  o.schedule.kind = ScheduleKind::cosine;
  o.schedule.warmup_steps = 2;
  o.schedule.total_steps = 9;
  o.seed = 5;
  o.loss_scale_init = 1024.0f;
  o.loss_scale_window = 2;  // fp16: the scale changes during the run
  return o;
}

void flip_byte(const std::string& path, uint64_t offset_from_end) {
  std::string bytes = read_file(path);
  bytes[bytes.size() - 1 - offset_from_end] ^= 0x10;
  write_bytes(path, bytes.data(), bytes.size());
}

}  // namespace

TEST_CASE("resume is exact: N steps, save, M more equals N+M uninterrupted", "[io][cpu]") {
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16, Precision::fp16}) {
      DYNAMIC_SECTION(arch << " " << precision_name(p)) {
        TempDir dir;
        const ModelConfig c = dropout_config(arch);
        const std::string shard = random_shard(dir, 4000, c.vocab_size, 1);
        const int N = 4, M = 5;
        Run full(c, p, resume_options(), shard, 3);
        std::vector<float> expect;
        for (int s = 0; s < N + M; ++s) expect.push_back(full.step().loss);

        std::vector<float> got;
        std::string saved;
        {
          Run first(c, p, resume_options(), shard, 3);
          for (int s = 0; s < N; ++s) got.push_back(first.step().loss);
          saved = save_run_checkpoint(dir.file("run"), first.model, first.trainer,
                                      TrainingProgress{first.loader.position(), {{"note", "test"}}});
        }
        // A different init seed: everything must come from the checkpoint.
        Run second(c, p, resume_options(), shard, 999);
        CheckpointInfo info = load_checkpoint(latest_checkpoint(dir.file("run")), second.model, &second.trainer);
        CHECK(info.path == saved);
        CHECK(info.trainer.step == N);
        CHECK(info.progress.extra.at("note") == "test");
        second.loader.seek(info.progress.data_position);
        for (int s = 0; s < M; ++s) got.push_back(second.step().loss);

        REQUIRE(got.size() == expect.size());
        for (size_t i = 0; i < got.size(); ++i) {
          INFO("step " << i + 1 << ": " << got[i] << " vs " << expect[i]);
          CHECK(float_bits(got[i]) == float_bits(expect[i]));
        }
        CHECK(second.trainer.step_count() == full.trainer.step_count());
        CHECK(second.trainer.loss_scale() == full.trainer.loss_scale());
        CHECK(snapshot(second) == snapshot(full));
      }
    }
}

TEST_CASE("checkpoint info round-trips the configs and trainer state", "[io][cpu]") {
  TempDir dir;
  ModelConfig c = dropout_config("llama");
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  TrainOptions o = resume_options();
  o.seed = 0xfedcba9876543210ull;
  o.schedule.kind = ScheduleKind::wsd;
  o.schedule.decay_steps = 3;
  Run r(c, Precision::bf16, o, random_shard(dir, 2000, c.vocab_size, 2), 1);
  r.step();
  save_checkpoint(dir.file("ck"), r.model, &r.trainer, TrainingProgress{42, {}}, CheckpointOptions{DType::bf16, true});
  CheckpointInfo info = read_checkpoint_info(dir.file("ck"));
  CHECK(model_config_to_json(info.config) == model_config_to_json(c));
  CHECK(info.config.rope_theta == c.rope_theta);
  CHECK(info.precision == Precision::bf16);
  CHECK(info.has_trainer);
  CHECK(info.options.seed == o.seed);
  CHECK(info.options.schedule.kind == ScheduleKind::wsd);
  CHECK(info.options.adamw.beta2 == o.adamw.beta2);
  CHECK(info.progress.data_position == 42);
  CHECK(info.trainer.step == 1);
  verify_checkpoint(dir.file("ck"));
  CHECK(SafetensorsReader(dir.file("ck/model.safetensors")).entry("blocks.0.attn.qkv.weight").dtype == "BF16");
  REQUIRE_THROWS_WITH(save_checkpoint(dir.file("ck"), r.model, &r.trainer), Catch::Contains("already exists"));
  REQUIRE_THROWS_WITH(model_config_from_json("{\"vocab_size\": 3}", "cfg"), Catch::Contains("cfg") &&
                                                                               Catch::Contains("n_layers"));
}

TEST_CASE("corrupt, truncated or mismatched checkpoints give errors naming the file", "[io][cpu]") {
  TempDir dir;
  const ModelConfig c = tiny_config("gpt");
  Run r(c, Precision::fp32, resume_options(), random_shard(dir, 2000, c.vocab_size, 2), 1);
  r.step();
  auto fresh = [&](const std::string& name) {
    save_checkpoint(dir.file(name), r.model, &r.trainer);
    return dir.file(name);
  };
  Run target(c, Precision::fp32, resume_options(), random_shard(dir, 2000, c.vocab_size, 2), 1);

  SECTION("a flipped bit in a tensor names the tensor") {
    const std::string ck = fresh("a");
    flip_byte(ck + "/model.safetensors", 3);  // inside the last tensor (head.ln_f.bias)
    REQUIRE_THROWS_WITH(load_checkpoint(ck, target.model, &target.trainer),
                        Catch::Contains("model.safetensors") && Catch::Contains("head.ln_f.bias") &&
                            Catch::Contains("checksum"));
    REQUIRE_THROWS_WITH(verify_checkpoint(ck), Catch::Contains("head.ln_f.bias"));
  }
  SECTION("a flipped bit in optimizer state names the unit's buffer") {
    const std::string ck = fresh("b");
    flip_byte(ck + "/optimizer.rank0.safetensors", 5);
    REQUIRE_THROWS_WITH(load_checkpoint(ck, target.model, &target.trainer),
                        Catch::Contains("optimizer.rank0.safetensors") && Catch::Contains("head.exp_avg_sq"));
  }
  SECTION("a truncated file") {
    const std::string ck = fresh("c");
    fs::resize_file(ck + "/optimizer.rank0.safetensors", 1000);
    REQUIRE_THROWS_WITH(load_checkpoint(ck, target.model, &target.trainer),
                        Catch::Contains("optimizer.rank0.safetensors") && Catch::Contains("truncated"));
  }
  SECTION("a changed header byte") {
    const std::string ck = fresh("d");
    std::string bytes = read_file(ck + "/model.safetensors");
    const size_t at = bytes.find("\"format\":\"pt\"");
    REQUIRE(at != std::string::npos);
    bytes[at + 11] = 'q';
    write_bytes(ck + "/model.safetensors", bytes.data(), bytes.size());
    REQUIRE_THROWS_WITH(load_checkpoint(ck, target.model), Catch::Contains("model.safetensors") &&
                                                               Catch::Contains("header fails its checksum"));
  }
  SECTION("edited trainer state") {
    const std::string ck = fresh("e");
    std::string text = read_file(ck + "/trainer_state.json");
    text.replace(text.find("\"step\": 1"), 9, "\"step\": 7");
    write_bytes(ck + "/trainer_state.json", text.data(), text.size());
    REQUIRE_THROWS_WITH(load_checkpoint(ck, target.model, &target.trainer),
                        Catch::Contains("trainer_state.json") && Catch::Contains("checksum"));
  }
  SECTION("no manifest: an interrupted save") {
    const std::string ck = fresh("f");
    fs::remove(ck + "/manifest.json");
    CHECK_FALSE(is_checkpoint(ck));
    REQUIRE_THROWS_WITH(load_checkpoint(ck, target.model), Catch::Contains("not a complete strata checkpoint"));
  }
  SECTION("another model") {
    const std::string ck = fresh("g");
    ModelConfig wide = c;
    wide.d_model = 32;
    Model other(wide, cpu(), Precision::fp32, 1);
    REQUIRE_THROWS_WITH(load_checkpoint(ck, other), Catch::Contains("model config differs"));
  }
  SECTION("weights only") {
    save_checkpoint(dir.file("w"), r.model, nullptr, {}, CheckpointOptions{DType::bf16, false});
    CHECK_FALSE(read_checkpoint_info(dir.file("w")).has_trainer);
    REQUIRE_THROWS_WITH(load_checkpoint(dir.file("w"), target.model, &target.trainer), Catch::Contains("weights only"));
    Model bf(c, cpu(), Precision::bf16, 5);
    load_checkpoint(dir.file("w"), bf);
    TensorView a = bf.parameter("blocks.1.mlp.fc.weight"), b = r.model.parameter("blocks.1.mlp.fc.weight");
    for (int64_t i = 0; i < a.numel(); ++i) REQUIRE(a.ptr<uint16_t>()[i] == float_to_bf16(b.ptr<float>()[i]));
  }
}

TEST_CASE("a run directory keeps the newest K checkpoints and ignores partial ones", "[io][cpu]") {
  TempDir dir;
  const ModelConfig c = tiny_config("gpt");
  Run r(c, Precision::fp32, resume_options(), random_shard(dir, 2000, c.vocab_size, 2), 1);
  const std::string run = dir.file("run");
  CHECK(latest_checkpoint(run).empty());
  fs::create_directories(run + "/.tmp-step_00000099-123-0");  // left by a killed save
  for (int s = 0; s < 5; ++s) {
    r.step();
    save_run_checkpoint(run, r.model, r.trainer, {}, {}, 2);
  }
  CHECK(list_checkpoints(run) == std::vector<std::string>{checkpoint_path(run, 4), checkpoint_path(run, 5)});
  CHECK_FALSE(fs::exists(run + "/.tmp-step_00000099-123-0"));
  fs::create_directories(checkpoint_path(run, 6));  // no manifest: never loaded
  CHECK(latest_checkpoint(run) == checkpoint_path(run, 5));
  // Saving the same step again replaces it with an equal checkpoint.
  save_run_checkpoint(run, r.model, r.trainer, {}, {}, 2);
  CHECK(read_checkpoint_info(checkpoint_path(run, 5)).trainer.step == 5);
  CHECK(fs::exists(checkpoint_path(run, 4)));
}
