// Work::wait(stream) on a CPU device's worker stream: the stream's later items run
// after the collective, without blocking the caller, so a copy of the result queued
// behind the wait sees the sum (under STRATA_STREAM_FUZZ too). And a collective issued
// on a worker stream reads its buffer only after the items queued there before it.
#include <catch2/catch.hpp>

#include "dist_test_util.h"
#include "strata/dist.h"

namespace strata::test {
namespace {

TEST_CASE("a worker stream that waits for a Work runs its later items after the collective", "[cpu][dist][stream]") {
  const int n = 3;
  const int64_t count = 1000;
  auto devs = make_devices(n);
  std::vector<HostBuf> in, bufs, seen;
  for (int r = 0; r < n; ++r) {
    in.push_back(random_buf(DType::f32, count, 700 + r));
    seen.push_back(random_buf(DType::f32, count, 800 + r));  // garbage the copy replaces
  }
  bufs = in;
  dist::run_ranks(n, [&](int r, dist::Comm& c) {
    Device& d = *devs[size_t(r)];
    Stream& out = d.stream(StreamRole::device_to_host);
    dist::Work w = c.all_reduce_sum_async(bufs[size_t(r)].view(&d), d.stream());
    w.wait(out);
    out.copy(seen[size_t(r)].bytes.data(), bufs[size_t(r)].bytes.data(), bufs[size_t(r)].bytes.size());
    out.synchronize();
  });
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < count; ++i) {
      float sum = in[0].get(i);
      for (int k = 1; k < n; ++k) sum += in[size_t(k)].get(i);
      REQUIRE(seen[size_t(r)].get(i) == sum);
    }
}

TEST_CASE("a collective issued on a worker stream reads what that stream wrote before it", "[cpu][dist][stream]") {
  const int n = 2;
  const int64_t count = 257;
  auto devs = make_devices(n);
  std::vector<HostBuf> src, bufs;
  for (int r = 0; r < n; ++r) {
    src.push_back(random_buf(DType::f32, count, 900 + r));
    bufs.push_back(random_buf(DType::f32, count, 950 + r));  // overwritten by the copy
  }
  dist::run_ranks(n, [&](int r, dist::Comm& c) {
    Device& d = *devs[size_t(r)];
    Stream& in = d.stream(StreamRole::host_to_device);
    in.copy(bufs[size_t(r)].bytes.data(), src[size_t(r)].bytes.data(), src[size_t(r)].bytes.size());
    dist::Work w = c.all_reduce_sum_async(bufs[size_t(r)].view(&d), in);
    w.wait();
    in.synchronize();
  });
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < count; ++i) REQUIRE(bufs[size_t(r)].get(i) == src[0].get(i) + src[1].get(i));
}

}  // namespace
}  // namespace strata::test
