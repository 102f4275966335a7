// Sharded safetensors checkpoints (model.safetensors.index.json): a model's export split
// into shards imports bitwise, tensors of every float dtype read across shards, and an
// index naming a missing shard or tensor is refused by name.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "io_support.h"

using namespace strata;
using namespace strata::test;
namespace fs = std::filesystem;

namespace {

// Splits dir/model.safetensors into `n` shards (tensor i in shard i mod n) with an index,
// as transformers' save_pretrained(max_shard_size) lays them out, then removes the file.
void shard_checkpoint(const std::string& dir, int n) {
  std::vector<std::vector<NamedTensor>> shards(static_cast<size_t>(n));
  std::vector<std::vector<char>> bytes;
  std::string map;
  {
    const SafetensorsReader r(dir + "/model.safetensors");
    bytes.reserve(r.tensors().size());
    for (size_t i = 0; i < r.tensors().size(); ++i) {
      const SafetensorsEntry& e = r.tensors()[i];
      REQUIRE(e.dtype == "F32");
      bytes.emplace_back(e.end - e.begin);
      r.read_raw(e, bytes.back().data());
      const std::string shard = "model-0000" + std::to_string(i % n + 1) + "-of-0000" + std::to_string(n) + ".safetensors";
      TensorView v(bytes.back().data(), DType::f32, {1});
      v.ndim = int(e.shape.size());
      std::copy(e.shape.begin(), e.shape.end(), v.shape);
      shards[i % size_t(n)].push_back({e.name, v});
      map += std::string(map.empty() ? "" : ", ") + "\"" + e.name + "\": \"" + shard + "\"";
    }
  }
  for (int s = 0; s < n; ++s)
    save_safetensors(dir + "/model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(n) + ".safetensors",
                     shards[size_t(s)]);
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"metadata\": {}, \"weight_map\": {" << map << "}}";
  fs::remove(dir + "/model.safetensors");
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("safetensors index: a model split into 3 shards imports bitwise", "[io][cpu]") {
  for (const char* arch : {"gpt", "llama"}) {
    DYNAMIC_SECTION(arch) {
      TempDir dir;
      const ModelConfig c = tiny_config(arch);
      Model a(c, cpu(), Precision::fp32, 17);
      const HfLayout layout = hf_layout_for(c);
      export_hf(a, dir.path(), layout, DType::f32);
      shard_checkpoint(dir.path(), 3);
      const SafetensorsCheckpoint ck(dir.path());
      CHECK(ck.num_files() == 3);
      CHECK(ck.path() == dir.file("model.safetensors.index.json"));
      Model b(c, cpu(), Precision::fp32, 18);
      import_hf(b, dir.path(), layout);
      for (int u = 0; u < a.num_units(); ++u)
        CHECK(std::memcmp(a.unit_params(u).data, b.unit_params(u).data, a.unit_params(u).nbytes()) == 0);
    }
  }
}

TEST_CASE("safetensors index: export_hf with a small max shard size writes >= 3 shards that import bitwise",
          "[io][cpu]") {
  for (const char* arch : {"gpt", "llama"}) {
    DYNAMIC_SECTION(arch) {
      TempDir dir;
      const ModelConfig c = tiny_config(arch);
      Model a(c, cpu(), Precision::fp32, 17);
      const HfLayout layout = hf_layout_for(c);
      export_hf(a, dir.path(), layout, DType::f32);  // a stale single file the sharded export removes
      export_hf(a, dir.path(), layout, DType::f32, 4 << 10);
      CHECK_FALSE(fs::exists(dir.file("model.safetensors")));
      const SafetensorsCheckpoint ck(dir.path());
      CHECK(ck.num_files() >= 3);
      Model b(c, cpu(), Precision::fp32, 18);
      import_hf(b, dir.path(), layout);
      for (int u = 0; u < a.num_units(); ++u)
        CHECK(std::memcmp(a.unit_params(u).data, b.unit_params(u).data, a.unit_params(u).nbytes()) == 0);
      // And back to one file: the index goes.
      export_hf(a, dir.path(), layout, DType::f32);
      CHECK_FALSE(fs::exists(dir.file("model.safetensors.index.json")));
      CHECK(SafetensorsCheckpoint(dir.path()).num_files() == 1);
    }
  }
}

TEST_CASE("safetensors index: f32, bf16 and f16 tensors in different shards read by name",
          "[io][cpu]") {
  TempDir dir;
  std::vector<float> f{1.5f, -2.25f, 3.0f, 1e-3f};
  std::vector<uint16_t> b(4), h(4);
  for (size_t i = 0; i < 4; ++i) b[i] = float_to_bf16(f[i]), h[i] = float_to_f16(f[i]);
  save_safetensors(dir.file("a.safetensors"), {{"w.f32", TensorView(f.data(), DType::f32, {2, 2})}});
  save_safetensors(dir.file("b.safetensors"), {{"w.bf16", TensorView(b.data(), DType::bf16, {4})},
                                               {"w.f16", TensorView(h.data(), DType::f16, {4})}});
  std::ofstream(dir.file("model.safetensors.index.json"))
      << R"({"weight_map": {"w.f32": "a.safetensors", "w.bf16": "b.safetensors", "w.f16": "b.safetensors"}})";
  const SafetensorsCheckpoint ck(dir.file("model.safetensors.index.json"));
  CHECK(ck.tensors().size() == 3);
  CHECK(ck.read_f32("w.f32") == f);
  const std::vector<float> rb = ck.read_f32("w.bf16"), rh = ck.read_f32("w.f16");
  for (size_t i = 0; i < 4; ++i) {
    CHECK(rb[i] == bf16_to_float(b[i]));
    CHECK(rh[i] == f16_to_float(h[i]));
  }
  CHECK(ck.find("nope") == nullptr);
  CHECK_THROWS_WITH(ck.read_f32("nope"), Catch::Contains("no tensor \"nope\""));
}

TEST_CASE("safetensors index: a missing shard or tensor is refused by name", "[io][cpu]") {
  TempDir dir;
  const ModelConfig c = tiny_config("llama");
  Model a(c, cpu(), Precision::fp32, 17);
  export_hf(a, dir.path(), HfLayout::llama, DType::f32);
  shard_checkpoint(dir.path(), 3);
  const std::string index = dir.file("model.safetensors.index.json");
  std::string text;
  {
    std::ifstream in(index);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(index, std::ios::trunc) << replace(text, "\"model-00002-of-00003.safetensors\"", "\"model-00009-of-00003.safetensors\"");
  CHECK_THROWS_WITH(SafetensorsCheckpoint(dir.path()),
                    Catch::Contains("names shard \"model-00009-of-00003.safetensors\"") &&
                        Catch::Contains("does not exist"));
  // The tensor model.norm.weight moved to a shard that does not hold it.
  const size_t at = text.find("\"model.norm.weight\": \"");
  REQUIRE(at != std::string::npos);
  const std::string holder = text.substr(at + 22, 33);
  const std::string other = holder == "model-00001-of-00003.safetensors\"" ? "model-00002-of-00003.safetensors\""
                                                                          : "model-00001-of-00003.safetensors\"";
  std::ofstream(index, std::ios::trunc) << replace(text, "\"model.norm.weight\": \"" + holder, "\"model.norm.weight\": \"" + other);
  CHECK_THROWS_WITH(SafetensorsCheckpoint(dir.path()),
                    Catch::Contains("puts \"model.norm.weight\" in") && Catch::Contains("has no such tensor"));
  fs::remove(index);
  CHECK_THROWS_WITH(SafetensorsCheckpoint(dir.path()), Catch::Contains("holds neither model.safetensors nor"));
}
