// The buffers the reduction tests sum over (tests/ops/cases/reduce.cpp and
// test_reduce.cpp): two of dtype dt and an f32 one, as a unit's gradients might be,
// seeded, in [-2, 2).
#pragma once
#include <vector>

#include "support/host_tensor.h"

namespace strata::test {

inline std::vector<HostTensor> reduce_buffers(DType dt, int64_t n) {
  std::vector<HostTensor> b;
  b.emplace_back(dt, std::vector<int64_t>{n});
  b.emplace_back(DType::f32, std::vector<int64_t>{17});
  b.emplace_back(dt, std::vector<int64_t>{3, n});
  for (size_t i = 0; i < b.size(); ++i) b[i].uniform(30 + i, -2, 2);
  return b;
}

}  // namespace strata::test
