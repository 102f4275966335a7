// TokenDataset: many shards seen as one sequence of tokens addressed by global position.
// Invariant: shards are held in sorted path order, so a global position names the same
// token on every run and every rank, whatever order glob(3) or the caller listed them.
#include <glob.h>
#include <unistd.h>

#include <algorithm>

#include "strata/data.h"
#include "strata/error.h"

namespace strata {

namespace {

std::vector<std::string> expand_pattern(const std::string& pattern) {
  STRATA_CHECK(!pattern.empty(), "TokenDataset: empty path; give a shard file or a glob "
                                 "pattern such as 'data/tiny_train_*.bin'");
  glob_t g{};
  int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
  std::vector<std::string> paths;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  // A literal path whose name holds glob characters ('[', '*', '?') matches itself.
  if (rc == GLOB_NOMATCH && ::access(pattern.c_str(), F_OK) == 0) return {pattern};
  STRATA_CHECK(rc != GLOB_NOSPACE, "TokenDataset: out of memory expanding '" << pattern << "'");
  STRATA_CHECK(rc != GLOB_ABORTED, "TokenDataset: cannot read the directories of '"
                                       << pattern << "'; check their permissions");
  STRATA_CHECK(!paths.empty(), "TokenDataset: '" << pattern
                                                 << "' matches no file; check the path, or "
                                                    "create the shards first (strata prepare)");
  return paths;
}

}  // namespace

TokenDataset::TokenDataset(const std::string& path_or_pattern)
    : TokenDataset(expand_pattern(path_or_pattern)) {}

TokenDataset::TokenDataset(const std::vector<std::string>& paths) {
  STRATA_CHECK(!paths.empty(), "TokenDataset: no shard paths given");
  std::vector<std::string> sorted = paths;
  std::sort(sorted.begin(), sorted.end());
  auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  STRATA_CHECK(dup == sorted.end(), "TokenDataset: shard '" << *dup << "' is listed twice");
  shards_.reserve(sorted.size());
  shard_begin_.push_back(0);
  for (const std::string& p : sorted) {
    shards_.emplace_back(p);
    num_tokens_ += shards_.back().size();
    shard_begin_.push_back(num_tokens_);
    const std::string mask = loss_mask_path(p);
    if (::access(mask.c_str(), F_OK) != 0) continue;
    masks_.emplace_back(mask);
    STRATA_CHECK(masks_.back().size() == shards_.back().size(),
                 "TokenDataset: loss mask '" << mask << "' holds " << masks_.back().size()
                                             << " entries for the " << shards_.back().size()
                                             << " tokens of '" << p << "'; prepare the data again");
  }
  STRATA_CHECK(masks_.empty() || masks_.size() == shards_.size(),
               "TokenDataset: " << masks_.size() << " of " << shards_.size()
                                << " shards have a loss mask (" << loss_mask_path(sorted[0])
                                << "...); mix instruction and plain shards in separate runs");
}

std::string loss_mask_path(const std::string& shard_path) {
  const std::string stem = shard_path.ends_with(".bin")
                               ? shard_path.substr(0, shard_path.size() - 4)
                               : shard_path;
  return stem + ".lossmask";
}

TokenView TokenDataset::window(int64_t position, int64_t length) const {
  return window_of(shards_, position, length);
}

TokenView TokenDataset::loss_mask_window(int64_t position, int64_t length) const {
  STRATA_CHECK(has_loss_mask(), "TokenDataset: the shards have no loss mask (only instruction "
                                "data made by strata prepare --instructions has one)");
  return window_of(masks_, position, length);
}

TokenView TokenDataset::window_of(const std::vector<TokenShard>& shards, int64_t position,
                                  int64_t length) const {
  STRATA_CHECK(length >= 1 && position >= 0 && position + length <= num_tokens_,
               "TokenDataset::window: tokens [" << position << ", " << position + length
                                                << ") are outside the dataset's "
                                                << num_tokens_ << " tokens");
  // The shard holding position: the last shard_begin_ <= position.
  auto it = std::upper_bound(shard_begin_.begin(), shard_begin_.end(), position);
  const size_t s = size_t(it - shard_begin_.begin()) - 1;
  const int64_t offset = position - shard_begin_[s];
  const TokenShard& shard = shards[s];
  STRATA_CHECK(offset + length <= shard.size(),
               "TokenDataset::window: tokens [" << position << ", " << position + length
                                                << ") cross the end of shard '" << shard.path()
                                                << "' (global tokens [" << shard_begin_[s]
                                                << ", " << shard_begin_[s + 1]
                                                << ")); a window must lie inside one shard");
  return shard.tokens().subview(size_t(offset), size_t(length));
}

void TokenDataset::validate_tokens(int64_t vocab_size) const {
  for (const TokenShard& s : shards_) s.validate_tokens(vocab_size);
}

}  // namespace strata
