// Loads refuse NaN and Inf: a checkpoint (weights alone, and with the trainer's
// master weights and moments) or a Hugging Face file whose tensor holds a
// non-finite value gives strata::Error naming the file and the tensor, in f32 and
// in bf16 files, before the model is used.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "io_support.h"

using namespace strata;
using namespace strata::test;
using Catch::Contains;

namespace {
void poison(Model& m, const std::string& name, int64_t index, float value) {
  const TensorView v = m.parameter(name);
  std::vector<float> host = copy_to_host_f32(v);
  host[size_t(index)] = value;
  copy_from_host_f32(v, host.data());
}
}  // namespace

TEST_CASE("checkpoint load refuses non-finite weights, naming the tensor", "[io][cpu]") {
  const ModelConfig c = tiny_config("gpt");
  for (DType dt : {DType::f32, DType::bf16}) {
    DYNAMIC_SECTION(dtype_name(dt)) {
      TempDir dir;
      Model a(c, cpu(), Precision::fp32, 3);
      poison(a, "blocks.1.mlp.fc.weight", 5, std::numeric_limits<float>::quiet_NaN());
      save_checkpoint(dir.file("ck"), a, nullptr, {}, {dt, true});
      Model b(c, cpu(), Precision::fp32, 4);
      REQUIRE_THROWS_WITH(load_checkpoint(dir.file("ck"), b),
                          Contains("model.safetensors") && Contains("tensor \"blocks.1.mlp.fc.weight\"") &&
                              Contains("NaN at element 5"));
      // The file's checksums hold: the refusal is about the values, not corruption.
      CHECK_NOTHROW(verify_checkpoint(dir.file("ck")));
    }
  }
}

TEST_CASE("resume refuses a checkpoint whose optimizer state is non-finite", "[io][cpu]") {
  TempDir dir;
  const std::string shard = random_shard(dir, 4000, 37, 9);
  TrainOptions o;
  o.schedule.kind = ScheduleKind::constant;
  Run a(tiny_config("gpt"), Precision::bf16, o, shard, 5);
  a.step();
  // bf16 weights are finite, the fp32 master of the same element is not: only the
  // optimizer file reveals it.
  float* master = static_cast<float*>(a.trainer.optimizer().master(1).data);
  master[3] = std::numeric_limits<float>::infinity();
  save_checkpoint(dir.file("ck"), a.model, &a.trainer, {}, {DType::f32, true});
  Run b(tiny_config("gpt"), Precision::bf16, o, shard, 5);
  REQUIRE_THROWS_WITH(load_checkpoint(dir.file("ck"), b.model, &b.trainer),
                      Contains("optimizer") && Contains(".master\"") && Contains("Inf at element 3"));
}

TEST_CASE("Hugging Face import refuses non-finite weights, naming the tensor", "[io][cpu]") {
  TempDir dir;
  const ModelConfig c = tiny_config("gpt");
  Model a(c, cpu(), Precision::fp32, 3);
  poison(a, "blocks.0.attn.qkv.weight", 0, -std::numeric_limits<float>::infinity());
  export_hf(a, dir.path(), hf_layout_for(c), DType::f32);
  Model b(c, cpu(), Precision::fp32, 4);
  REQUIRE_THROWS_WITH(import_hf(b, dir.path(), hf_layout_for(c)),
                      Contains("model.safetensors") && Contains("c_attn") && Contains("Inf at element"));
}
