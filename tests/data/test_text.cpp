// Text preparation: the byte tokenizer, reading files, the fortunes corpus listing and
// prepare_text's per-file train/val split.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "strata/data.h"
#include "strata/error.h"
#include "support/skip.h"
#include "temp_dir.h"

using namespace strata;
using strata::test::skip_test;
using strata::test::TempDir;
using Catch::Contains;

namespace {

void write_text(const std::string& path, const std::string& text) {
  strata::test::write_bytes(path, text.data(), text.size());
}

// n bytes cycling through all 256 values, offset so files differ.
std::string byte_text(size_t n, int offset) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char((i * 7 + size_t(offset)) & 255);
  return s;
}

std::string decode_shard(const std::string& path) {
  const TokenShard shard(path);
  const std::vector<uint16_t> tokens(shard.tokens().begin(), shard.tokens().end());
  return decode_bytes(tokens);
}

}  // namespace

TEST_CASE("byte tokenizer: every byte round-trips", "[data]") {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  const std::vector<uint16_t> tokens = encode_bytes(all);
  REQUIRE(tokens.size() == 256);
  for (int b = 0; b < 256; ++b) REQUIRE(tokens[size_t(b)] == b);
  CHECK(decode_bytes(tokens) == all);
  CHECK(encode_bytes("").empty());
  const std::vector<uint16_t> bad = {104, 105, 256};
  REQUIRE_THROWS_WITH(decode_bytes(bad), Contains("token 256") && Contains("index 2"));
}

TEST_CASE("read_text_files concatenates, and names a file it cannot read", "[data]") {
  TempDir dir;
  write_text(dir.file("a.txt"), "hello ");
  write_text(dir.file("b.txt"), "world");
  CHECK(read_text_files({dir.file("a.txt"), dir.file("b.txt")}) == "hello world");
  REQUIRE_THROWS_WITH(read_text_files({dir.file("a.txt"), dir.file("missing.txt")}),
                      Contains(dir.file("missing.txt")) && Contains("No such file"));
  REQUIRE_THROWS_WITH(read_text_files({dir.path()}), Contains("not a regular file"));
}

TEST_CASE("prepare_text: the last val_fraction of each file is validation", "[data]") {
  TempDir dir;
  const std::string a = byte_text(1000, 0), b = byte_text(37, 3), c = byte_text(5, 9);
  write_text(dir.file("a.txt"), a);
  write_text(dir.file("b.txt"), b);
  write_text(dir.file("c.txt"), c);
  const std::string prefix = dir.file("out/tiny");
  std::filesystem::create_directory(dir.file("out"));

  const double f = 0.1;
  const PrepareResult r =
      prepare_text({dir.file("a.txt"), dir.file("b.txt"), dir.file("c.txt")}, prefix, f);
  CHECK(r.train_path == prefix + "_train.bin");
  CHECK(r.val_path == prefix + "_val.bin");
  // Per file: floor(size * f) bytes held out -> 100, 3, 0.
  CHECK(r.val_tokens == 103);
  CHECK(r.train_tokens == 900 + 34 + 5);
  CHECK(decode_shard(r.train_path) == a.substr(0, 900) + b.substr(0, 34) + c);
  CHECK(decode_shard(r.val_path) == a.substr(900) + b.substr(34));
  CHECK(TokenShard(r.train_path).size() == r.train_tokens);

  const PrepareResult none = prepare_text({dir.file("a.txt")}, prefix, 0.0);
  CHECK(none.val_tokens == 0);
  CHECK(TokenShard(none.val_path).size() == 0);
  CHECK(decode_shard(none.train_path) == a);
}

TEST_CASE("prepare_text: bad inputs fail before anything is written", "[data]") {
  TempDir dir;
  write_text(dir.file("a.txt"), "some text");
  const std::string prefix = dir.file("p");
  REQUIRE_THROWS_WITH(prepare_text({dir.file("a.txt"), dir.file("gone.txt")}, prefix, 0.1),
                      Contains(dir.file("gone.txt")));
  CHECK_FALSE(std::filesystem::exists(prefix + "_train.bin"));
  REQUIRE_THROWS_WITH(prepare_text({dir.file("a.txt")}, prefix, 1.0),
                      Contains("val_fraction 1") && Contains("[0, 1)"));
  REQUIRE_THROWS_WITH(prepare_text({dir.file("a.txt")}, prefix, -0.5), Contains("[0, 1)"));
  REQUIRE_THROWS_WITH(prepare_text({}, prefix, 0.1), Contains("no input files"));
  // A missing output directory is created; one that cannot be (a file in the way)
  // is an error naming it.
  CHECK(prepare_text({dir.file("a.txt")}, dir.file("new/dir/p"), 0.1).train_tokens > 0);
  CHECK(std::filesystem::exists(dir.file("new/dir/p_train.bin")));
  REQUIRE_THROWS_WITH(prepare_text({dir.file("a.txt")}, dir.file("a.txt/p"), 0.1), Contains(dir.file("a.txt")));
}

TEST_CASE("default_corpus_files lists only the plain fortune text files", "[data]") {
  TempDir dir;
  write_text(dir.file("zippy"), "Yow!\n%\n");
  write_text(dir.file("art"), "art\n%\n");
  write_text(dir.file("art.dat"), "index");
  REQUIRE(::symlink("art", dir.file("art.u8").c_str()) == 0);
  REQUIRE(::symlink("zippy", dir.file("alias").c_str()) == 0);
  std::filesystem::create_directory(dir.file("off"));
  write_text(dir.file("off/rude"), "rude\n");
  CHECK(default_corpus_files(dir.path()) ==
        std::vector<std::string>{dir.file("art"), dir.file("zippy")});

  REQUIRE_THROWS_WITH(default_corpus_files(dir.file("missing")),
                      Contains(dir.file("missing")) &&
                          Contains("install the Debian package 'fortunes' (make deps)"));
  std::filesystem::create_directory(dir.file("empty"));
  REQUIRE_THROWS_WITH(default_corpus_files(dir.file("empty")),
                      Contains("no fortune text files") && Contains("'fortunes'"));
}

TEST_CASE("default_corpus_files finds the installed fortunes package", "[data]") {
  if (::access(kFortunesDir, R_OK) != 0) {
    skip_test(std::string(kFortunesDir) + " is missing (install the Debian package 'fortunes')");
    return;
  }
  const std::vector<std::string> files = default_corpus_files();
  REQUIRE(files.size() > 10);
  CHECK(std::is_sorted(files.begin(), files.end()));
  for (const std::string& f : files) {
    CHECK(f.find(".dat") == std::string::npos);
    CHECK(f.find(".u8") == std::string::npos);
    struct stat st {};
    REQUIRE(::lstat(f.c_str(), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
  }
  CHECK(read_text_files(files).size() > 1000000);
}
