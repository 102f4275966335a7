// safetensors: CRC32C known answers, writer/reader round trips with dtype
// conversion and checksums, every class of malformed header rejected with a clear
// error, and a deterministic fuzz (random mutations of a valid file must give
// strata::Error, never a crash; run it under ASan with `make test-asan`).
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "common/philox.h"
#include "data/temp_dir.h"
#include "strata/checkpoint.h"
#include "strata/error.h"

using namespace strata;
using strata::test::TempDir;

namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char(n >> (8 * i));
  return s;
}

// A file image from a header text and data bytes.
std::string image(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

void put(const std::string& path, const std::string& bytes) { test::write_bytes(path, bytes.data(), bytes.size()); }

// A small valid file: a (2, 3) F32 tensor "a" and a (4,) BF16 tensor "b".
std::string valid_file(const TempDir& dir) {
  std::vector<float> a{1, -2, 3.5f, 4, 5, 6};
  std::vector<uint16_t> b{float_to_bf16(1.0f), float_to_bf16(-0.5f), float_to_bf16(2.0f), float_to_bf16(0.25f)};
  const std::string path = dir.file("valid.safetensors");
  save_safetensors(path, {{"a", TensorView(a.data(), DType::f32, {2, 3})}, {"b", TensorView(b.data(), DType::bf16, {4})}},
                   {{"note", "hello"}});
  return path;
}

}  // namespace

TEST_CASE("crc32c gives the standard Castagnoli checksum and extends", "[io][cpu]") {
  const char* s = "123456789";
  CHECK(crc32c(s, 9) == 0xe3069283u);  // the check value of CRC-32C
  CHECK(crc32c(s, 0) == 0u);
  CHECK(crc32c(s + 4, 5, crc32c(s, 4)) == crc32c(s, 9));
  std::vector<unsigned char> zeros(32, 0);
  CHECK(crc32c(zeros.data(), 32) == 0x8a9136aau);  // RFC 3720 B.4: 32 bytes of zeros
}

TEST_CASE("safetensors round trip keeps values, shapes, metadata and checksums", "[io][cpu]") {
  TempDir dir;
  const std::string path = valid_file(dir);
  SafetensorsReader r(path);
  REQUIRE(r.tensors().size() == 2);
  CHECK(r.entry("a").dtype == "F32");
  CHECK(r.entry("a").shape == std::vector<int64_t>{2, 3});
  CHECK(r.entry("b").dtype == "BF16");
  CHECK(r.metadata().at("note") == "hello");
  CHECK(r.data_offset() % 8 == 0);
  uint32_t crc;
  REQUIRE(r.stored_checksum("a", crc));
  CHECK(r.read_f32("a") == std::vector<float>{1, -2, 3.5f, 4, 5, 6});
  CHECK(r.read_f32("b") == std::vector<float>{1.0f, -0.5f, 2.0f, 0.25f});
  // Conversion on read: f32 file data into bf16 memory, rounding to nearest even.
  std::vector<uint16_t> bf(6);
  r.read("a", TensorView(bf.data(), DType::bf16, {6}));
  CHECK(bf[2] == float_to_bf16(3.5f));
  r.verify();
  REQUIRE_THROWS_WITH(r.entry("zz"), Catch::Contains("valid.safetensors") && Catch::Contains("\"zz\""));
  std::vector<float> small(5);
  REQUIRE_THROWS_WITH(r.read("a", TensorView(small.data(), DType::f32, {5})), Catch::Contains("6 elements"));
}

TEST_CASE("the streaming writer takes chunks of any size and converts dtypes", "[io][cpu]") {
  TempDir dir;
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.37f - 100.0f;
  {
    SafetensorsWriter w(dir.file("s.safetensors"),
                        {{"x", "F32", {10, 100}, 0, 0}, {"empty", "F32", {0}, 0, 0}, {"y", "BF16", {1000}, 0, 0}});
    const char* p = reinterpret_cast<const char*>(x.data());
    for (size_t done = 0; done < 4000;) {  // odd chunk sizes straddle elements
      const size_t n = std::min<size_t>(777, 4000 - done);
      w.write(p + done, n);
      done += n;
    }
    w.write_converted(TensorView(x.data(), DType::f32, {1000}));
    w.finish();
  }
  SafetensorsReader r(dir.file("s.safetensors"));
  CHECK(r.read_f32("x") == x);
  CHECK(r.entry("empty").numel() == 0);
  std::vector<float> y = r.read_f32("y");
  for (size_t i = 0; i < x.size(); ++i) REQUIRE(y[i] == bf16_to_float(float_to_bf16(x[i])));
  r.verify();
}

TEST_CASE("an unfinished writer leaves no file; misuse is an error", "[io][cpu]") {
  TempDir dir;
  float v[4] = {1, 2, 3, 4};
  {
    SafetensorsWriter w(dir.file("p.safetensors"), {{"v", "F32", {4}, 0, 0}});
    w.write(v, 8);
    REQUIRE_THROWS_WITH(w.finish(), Catch::Contains("finish() after 8 of 16"));
  }
  CHECK(std::filesystem::is_empty(dir.path()));
  SafetensorsWriter w(dir.file("q.safetensors"), {{"v", "F32", {4}, 0, 0}});
  REQUIRE_THROWS_WITH(w.write(v, 20), Catch::Contains("more than the declared 16"));
  REQUIRE_THROWS_WITH(SafetensorsWriter(dir.file("r"), {{"v", "F32", {1}, 0, 0}, {"v", "F32", {1}, 0, 0}}),
                      Catch::Contains("repeated"));
  REQUIRE_THROWS_WITH(SafetensorsWriter(dir.file("r"), {{"v", "Q4", {1}, 0, 0}}), Catch::Contains("unknown safetensors dtype"));
}

TEST_CASE("malformed safetensors headers are rejected with clear errors", "[io][cpu]") {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  const std::string data8(8, '\0');
  auto expect_error = [&](const std::string& bytes, const std::string& text) {
    put(p, bytes);
    REQUIRE_THROWS_WITH(SafetensorsReader(p), Catch::Contains(text) && Catch::Contains("bad.safetensors"));
  };
  expect_error("abc", "fewer than the 8-byte length");
  expect_error(le64(uint64_t(200) << 20) + "{}", "exceeds the 100 MB limit");
  expect_error(le64(1000) + "{}", "runs past the end");
  expect_error(le64(0), "too short");
  expect_error(image("[1, 2]", ""), "does not start with '{'");
  expect_error(image("{\"a\": ", ""), "malformed JSON");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", data8 + "x"),
               "after the last tensor");
  expect_error(image(R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", data8),
               "unknown safetensors dtype \"Q4\"");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", data8),
               "needs 12 bytes but data_offsets span 8");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", data8),
               "run past the end of the data section");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", data8), "reversed");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                     R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                     data8),
               "overlaps");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", data8), "belong to no tensor");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", data8), "negative dimension");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", data8),
               "overflows");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", data8), "[begin, end]");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}})", data8),
               "unexpected key");
  expect_error(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": 1})", data8),
               "duplicate key");
  expect_error(image(R"({"__metadata__": {"k": 5}})", ""), "expected a string");
  expect_error(image(std::string(100, '[') + std::string(100, ']'), ""), "does not start with '{'");
  expect_error(image("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", ""), "deeper than 64");
}

TEST_CASE("a corrupt tensor fails its checksum, naming the file and tensor", "[io][cpu]") {
  TempDir dir;
  const std::string path = valid_file(dir);
  std::string bytes = test::read_file(path);
  bytes[bytes.size() - 1] ^= 0x40;  // last byte of tensor "b"
  put(path, bytes);
  SafetensorsReader r(path);
  CHECK(r.read_f32("a").size() == 6);
  REQUIRE_THROWS_WITH(r.read_f32("b"), Catch::Contains("valid.safetensors") && Catch::Contains("tensor \"b\"") &&
                                           Catch::Contains("checksum"));
  REQUIRE_THROWS_WITH(r.verify(), Catch::Contains("tensor \"b\""));
}

namespace {
// Random byte flips, truncations, extensions and header-length changes of a valid
// file: each must be read cleanly or rejected with strata::Error.
void fuzz(int trials, uint32_t stream) {
  TempDir dir;
  const std::string original = test::read_file(valid_file(dir));
  const std::string p = dir.file("fuzz.safetensors");
  num::RandomKey key{20240611, stream, 0};
  uint64_t counter = 0;
  auto rnd = [&](uint64_t n) { return n ? num::philox_word(key, counter++) % n : 0; };
  int rejected = 0, accepted = 0;
  for (int trial = 0; trial < trials; ++trial) {
    std::string b = original;
    const int mutations = 1 + int(rnd(4));
    for (int m = 0; m < mutations; ++m) {
      switch (rnd(6)) {
        case 0: if (!b.empty()) b[rnd(b.size())] = char(rnd(256)); break;  // any byte
        case 1: if (b.size() > 8) b[8 + rnd(b.size() - 8)] = "{}[]\",:0123456789-eE. "[rnd(22)]; break;  // JSON-ish
        case 2: b.resize(rnd(b.size() + 1)); break;  // truncate
        case 3: b.append(rnd(16), char(rnd(256))); break;  // extend
        case 4: {  // a new header length near the real one
          if (b.size() < 8) break;
          const uint64_t n = uint64_t(original[0] & 0xff) + rnd(64) - 32;
          std::string len = le64(n);
          std::memcpy(b.data(), len.data(), 8);
          break;
        }
        default: if (b.size() > 9) b.erase(8 + rnd(b.size() - 8), 1 + rnd(4));  // delete bytes
      }
    }
    put(p, b);
    try {
      SafetensorsReader r(p);
      for (const SafetensorsEntry& e : r.tensors()) {
        std::vector<char> raw(size_t(e.end - e.begin));
        r.read_raw(e, raw.data());
        if (e.dtype == "F32" || e.dtype == "BF16" || e.dtype == "F16" || e.dtype == "F64") r.read_f32(e.name);
      }
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    }
  }
  INFO("accepted " << accepted << ", rejected " << rejected);
  CHECK(rejected > trials * 2 / 3);  // nearly every mutation breaks the header, the data or a checksum
}
}  // namespace

TEST_CASE("safetensors fuzz: mutated files give strata::Error, never a crash", "[io][cpu]") { fuzz(1500, 7); }

TEST_CASE("safetensors fuzz, many mutations", "[io][cpu][slow]") { fuzz(10000, 8); }
