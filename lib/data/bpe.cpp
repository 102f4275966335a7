// Byte-level BPE: the byte map and the merge loop (see bpe.h for the invariant).
#include "lib/data/bpe.h"

#include <array>
#include <queue>

namespace strata::bpe {
namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

struct ByteMap {
  std::array<std::string, 256> chars;
  std::unordered_map<uint32_t, uint8_t> bytes;  // code point -> byte
  ByteMap() {
    // Printable Latin-1 bytes stand for themselves; the rest map to 256, 257, ...
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + next++);
      chars[b] = utf8(cp);
      bytes[cp] = uint8_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::string& byte_to_char(uint8_t byte) { return byte_map().chars[byte]; }

bool chars_to_bytes(std::string_view chars, std::string& bytes) {
  const ByteMap& map = byte_map();
  bytes.clear();
  for (size_t i = 0; i < chars.size();) {
    const auto c = static_cast<unsigned char>(chars[i]);
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
      cp = c, n = 1;
    } else if ((c >> 5) == 0x6 && i + 1 < chars.size()) {
      cp = ((c & 0x1F) << 6) | (chars[i + 1] & 0x3F), n = 2;
    } else if ((c >> 4) == 0xE && i + 2 < chars.size()) {
      cp = ((c & 0x0F) << 12) | ((chars[i + 1] & 0x3F) << 6) | (chars[i + 2] & 0x3F), n = 3;
    } else {
      return false;
    }
    const auto it = map.bytes.find(cp);
    if (it == map.bytes.end()) return false;
    bytes += char(it->second);
    i += n;
  }
  return true;
}

void Merges::add(uint32_t left, uint32_t right, uint32_t rank, uint32_t merged) {
  table_.emplace((uint64_t(left) << 32) | right, Entry{rank, merged});
}

const Merges::Entry* Merges::find(uint32_t left, uint32_t right) const {
  const auto it = table_.find((uint64_t(left) << 32) | right);
  return it == table_.end() ? nullptr : &it->second;
}

void Merges::apply(std::vector<uint32_t>& ids) const {
  const int n = int(ids.size());
  if (n < 2) return;
  // A doubly linked list over the symbols and a heap of candidate merges ordered by
  // (rank, position); entries made stale by an earlier merge are skipped when popped.
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  struct Candidate {
    uint32_t rank;
    int pos;
    uint32_t left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const Entry* e = find(ids[pos], ids[next[pos]]))
      heap.push({e->rank, pos, ids[pos], ids[next[pos]]});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int right = next[c.pos];
    if (!alive[c.pos] || right < 0 || ids[c.pos] != c.left || ids[right] != c.right) continue;
    ids[c.pos] = find(c.left, c.right)->merged;
    alive[right] = false;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  int out = 0;
  for (int i = 0; i >= 0; i = next[i]) ids[out++] = ids[i];
  ids.resize(out);
}

}  // namespace strata::bpe
