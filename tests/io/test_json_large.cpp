// Headers too large for a quadratic parser: a safetensors header with 100,000
// tensors (the JSON object's duplicate-key check must not rescan the keys seen so
// far), a duplicate key found at the end of it, and deep nesting bounded. These
// files join the fuzz: mutations of the large header give strata::Error or parse.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "common/philox.h"
#include "data/temp_dir.h"
#include "lib/io/json.h"
#include "strata/checkpoint.h"
#include "strata/error.h"

using namespace strata;
using strata::test::TempDir;

namespace {

constexpr int kTensors = 100000;

// A header of kTensors one-element F32 tensors t0..t{n-1}; `last_name` replaces the
// last tensor's name (a duplicate, when it repeats an earlier one).
std::string many_tensor_file(const std::string& last_name) {
  std::string h = "{";
  for (int i = 0; i < kTensors; ++i) {
    const std::string name = i == kTensors - 1 ? last_name : "t" + std::to_string(i);
    h += (i ? "," : "") + json::quote(name) + ":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
         std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  h += "}";
  std::string data(size_t(4) * kTensors, '\0');
  for (int i = 0; i < kTensors; ++i) {
    const float x = float(i);
    std::memcpy(&data[size_t(4) * size_t(i)], &x, 4);
  }
  std::string length(8, '\0');  // little-endian u64, as on every host strata builds for
  const uint64_t n = h.size();
  std::memcpy(length.data(), &n, 8);
  return length + h + data;
}

}  // namespace

TEST_CASE("json: a 100,000-key object parses, keeps order and finds a late duplicate", "[io][cpu]") {
  std::string text = "{";
  for (int i = 0; i < kTensors; ++i) text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":" + std::to_string(i);
  json::Value v = json::parse(text + "}", "big");
  const auto& m = v.members("big");
  REQUIRE(m.size() == size_t(kTensors));
  CHECK(m.front().first == "k0");
  CHECK(m.back().first == "k99999");
  CHECK(m.back().second.as_int("k99999") == 99999);
  REQUIRE_THROWS_WITH(json::parse(text + ",\"k5\":0}", "big"), Catch::Contains("duplicate key \"k5\""));
  // Numbers keep their literal text, and integers past int64 are refused on access.
  json::Value n = json::parse("{\"a\": 0.100000001, \"b\": 18446744073709551615, \"c\": 99999999999999999999}", "n");
  CHECK(n.at("a", "n").dump() == "0.100000001");
  CHECK(n.at("b", "n").as_uint("b") == 18446744073709551615ull);
  REQUIRE_THROWS_WITH(n.at("c", "n").as_int("c"), Catch::Contains("int64 range"));
  REQUIRE_THROWS_WITH(json::parse("{\"a\": 1} x", "tail"), Catch::Contains("tail") && Catch::Contains("malformed JSON"));
}

TEST_CASE("safetensors: a 100,000-tensor header parses; a duplicate at its end is refused", "[io][cpu]") {
  TempDir dir;
  const std::string p = dir.file("many.safetensors");
  const std::string good = many_tensor_file("t" + std::to_string(kTensors - 1));
  test::write_bytes(p, good.data(), good.size());
  {
    SafetensorsReader r(p);
    REQUIRE(r.tensors().size() == size_t(kTensors));
    CHECK(r.read_f32("t99999") == std::vector<float>{99999.0f});
    CHECK(r.read_f32("t12345") == std::vector<float>{12345.0f});
  }
  const std::string dup = many_tensor_file("t7");
  test::write_bytes(p, dup.data(), dup.size());
  REQUIRE_THROWS_WITH(SafetensorsReader(p), Catch::Contains("many.safetensors") && Catch::Contains("duplicate key \"t7\""));

  // A short fuzz of the large file: each mutation parses or gives strata::Error.
  num::RandomKey key{20261202, 19, 0};
  uint64_t counter = 0;
  int rejected = 0;
  for (int trial = 0; trial < 4; ++trial) {
    std::string b = good;
    const size_t at = 8 + num::philox_word(key, counter++) % (good.size() - 8 - size_t(4) * kTensors);
    b[at] = "{}[]\",:0123456789-eE. x"[num::philox_word(key, counter++) % 23];
    test::write_bytes(p, b.data(), b.size());
    try {
      SafetensorsReader r(p);
    } catch (const Error&) {
      ++rejected;
    }
  }
  CHECK(rejected > 0);
}
