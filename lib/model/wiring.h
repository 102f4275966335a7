// How a Model's units are wired (side inputs): which read the trunk stream, which a
// batch input, which publish their output and whose published activations each reads.
// Invariant: built and checked once, at Model construction, before anything is laid
// out; a unit reads only what an earlier unit publishes, so the forward order fills
// every side input first and the reverse order has every reader's gradient in its
// publisher's buffer before the publisher's backward runs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "strata/model.h"
#include "strata/unit.h"

namespace strata {

struct Model::Wiring {
  // Per unit: the batch input it reads (-1 the stream, 0 Batch::inputs, k >= 1 the
  // extra input extra_names[k - 1]), the publishers of its reads() in order, and its
  // slot among the publishers (-1: publishes nothing).
  std::vector<int> input;
  std::vector<std::vector<int>> side_from;
  std::vector<int> side_slot;
  std::vector<std::string> extra_names;
  std::vector<int> publishers;  // in unit order; slot i is publishers[i]

  bool reads_stream(int u) const { return input[size_t(u)] < 0; }
  // Throws strata::Error naming the units for an unknown name, a read before its
  // publisher, a name published twice, or a last unit that does not read the stream.
  static Wiring of(const std::vector<std::unique_ptr<Unit>>& units);
};

}  // namespace strata
