// The tokenizer fixtures in tests/data/tokenizers/ (made by tools/hf/), for the
// tokenizer, SentencePiece and instruction-data tests.
#pragma once
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace strata::test {

inline std::string fixture(const std::string& name) {
  return std::string(STRATA_SOURCE_DIR) + "/tests/data/tokenizers/" + name;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fixture's reference ids: whitespace-separated decimal numbers.
inline std::vector<uint32_t> read_ids(const std::string& path) {
  std::istringstream in(slurp(path));
  std::vector<uint32_t> ids;
  for (uint32_t id; in >> id;) ids.push_back(id);
  return ids;
}

}  // namespace strata::test
