// How communicators fail: argument errors name the collective and the argument; a
// rank that throws makes every other rank throw "rank R failed: <message>" instead
// of hanging (whether they are already blocked in a collective or enter one later);
// ranks that disagree on the collective, or return early, fail instead of hanging;
// and the rendezvous file used by multi-node NCCL bootstrap. Every multi-rank test
// runs under a watchdog that kills the suite after 10 s.
#include <catch2/catch.hpp>
#include <atomic>
#include <filesystem>
#include <unistd.h>

#include "dist_test_util.h"
#include "lib/dist/bootstrap_file.h"
#include "strata/dist.h"
#include "strata/error.h"
#include "support/skip.h"

namespace strata::test {
namespace {

using Catch::Contains;
using dist::Comm;

TEST_CASE("collective arguments are checked with errors naming the call", "[cpu][dist]") {
  auto dev = Device::cpu(0);
  auto other = Device::cpu(1);
  Stream& s = dev->stream();
  auto comms = dist::make_cpu_comms(1);
  Comm& c = *comms[0];
  std::vector<int32_t> ints(8);
  std::vector<float> f(8);
  TensorView iv(ints.data(), DType::i32, {8}, dev.get());
  TensorView fv(f.data(), DType::f32, {8}, dev.get());
  REQUIRE_THROWS_WITH(c.all_reduce_sum(iv, s),
                      Contains("all_reduce_sum") && Contains("buf") && Contains("f32 or bf16"));
  REQUIRE_THROWS_WITH(c.all_reduce_sum(TensorView(nullptr, DType::f32, {8}), s),
                      Contains("all_reduce_sum") && Contains("null"));
  REQUIRE_THROWS_WITH(c.all_reduce_sum(TensorView(f.data(), DType::f32, {8}, other.get()), s),
                      Contains("all_reduce_sum") && Contains("cpu:1") && Contains("cpu:0"));
  REQUIRE_THROWS_WITH(c.broadcast(fv, 1, s), Contains("broadcast") && Contains("root 1"));
  std::vector<uint16_t> h(4);
  REQUIRE_THROWS_WITH(c.all_gather(TensorView(h.data(), DType::bf16, {4}), fv, s),
                      Contains("all_gather") && Contains("same dtype"));
  REQUIRE_THROWS_WITH(c.reduce_scatter_sum(fv, fv.slice_rows(0, 4), s),
                      Contains("reduce_scatter_sum") && Contains("out") && Contains("one shard"));
  CHECK(c.bytes_sent() == 0);  // failed calls move nothing
}

TEST_CASE("reduce_scatter and all_gather need sizes divisible by the rank count",
          "[cpu][dist]") {
  Watchdog watchdog(10, "divisibility errors");
  const int n = 3;
  auto devs = make_devices(n);
  std::vector<std::vector<float>> in(n, std::vector<float>(1000)), out(n, std::vector<float>(333));
  REQUIRE_THROWS_WITH(dist::run_ranks(n,
                                      [&](int r, Comm& c) {
                                        Device* d = devs[size_t(r)].get();
                                        c.reduce_scatter_sum(
                                            TensorView(in[r].data(), DType::f32, {1000}, d),
                                            TensorView(out[r].data(), DType::f32, {333}, d),
                                            d->stream());
                                      }),
                      Contains("reduce_scatter_sum") && Contains("1000 elements") &&
                          Contains("not divisible by 3 ranks"));
  REQUIRE_THROWS_WITH(dist::run_ranks(n,
                                      [&](int r, Comm& c) {
                                        Device* d = devs[size_t(r)].get();
                                        c.all_gather(TensorView(out[r].data(), DType::f32, {333}, d),
                                                     TensorView(in[r].data(), DType::f32, {1000}, d),
                                                     d->stream());
                                      }),
                      Contains("all_gather") && Contains("1000 elements") &&
                          Contains("not divisible by 3 ranks"));
}

// Rank 1 fails while the other ranks are blocked inside (delay_before_throw) or
// before they enter (delay_others) an all-reduce. Everyone must return, every other
// rank with "rank 1 failed: <message>", and run_ranks must rethrow that error.
void check_abort(int n, bool others_enter_late) {
  CAPTURE(n, others_enter_late);
  Watchdog watchdog(10, "abort test");
  auto devs = make_devices(n);
  std::vector<std::vector<float>> bufs(size_t(n), std::vector<float>(1000, 1.f));
  std::vector<std::string> seen(static_cast<size_t>(n));
  std::atomic<bool> thrown{false};
  auto body = [&](int r, Comm& c) {
    Device* d = devs[size_t(r)].get();
    if (r == 1) {
      if (!others_enter_late) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      thrown = true;
      throw std::runtime_error("injected failure in the forward pass");
    }
    if (others_enter_late)
      while (!thrown) std::this_thread::yield();
    try {
      c.all_reduce_sum(TensorView(bufs[size_t(r)].data(), DType::f32, {1000}, d), d->stream());
      c.barrier(d->stream());
    } catch (const Error& e) {
      seen[size_t(r)] = e.what();
      throw;
    }
  };
  REQUIRE_THROWS_WITH(dist::run_ranks(n, body),
                      Contains("rank 1 failed") &&
                          Contains("injected failure in the forward pass"));
  for (int r = 0; r < n; ++r) {
    if (r == 1) continue;
    CAPTURE(r);
    CHECK_THAT(seen[size_t(r)], Contains("rank 1 failed: injected failure in the forward pass"));
  }
}

TEST_CASE("a rank that throws aborts ranks blocked in a collective", "[cpu][dist]") {
  for (int n : {2, 3, 4}) check_abort(n, false);
}

TEST_CASE("a rank that throws aborts ranks entering a collective later", "[cpu][dist]") {
  for (int n : {2, 4}) check_abort(n, true);
}

TEST_CASE("an aborted communicator stays aborted", "[cpu][dist]") {
  Watchdog watchdog(10, "aborted communicator");
  auto devs = make_devices(2);
  auto comms = dist::make_cpu_comms(2);
  REQUIRE_THROWS(dist::run_ranks(comms, [&](int r, Comm& c) {
    if (r == 0) throw Error("boom");
    c.barrier(devs[size_t(r)]->stream());
  }));
  CHECK(comms[0]->aborted());
  CHECK(comms[1]->aborted());
  REQUIRE_THROWS_WITH(comms[1]->barrier(devs[1]->stream()), Contains("rank 0 failed: boom"));
}

TEST_CASE("ranks that call different collectives fail instead of hanging", "[cpu][dist]") {
  Watchdog watchdog(10, "mismatched collectives");
  const int n = 3;
  auto devs = make_devices(n);
  std::vector<std::vector<float>> bufs(size_t(n), std::vector<float>(20));
  std::vector<std::string> seen(static_cast<size_t>(n));
  auto run = [&](auto call) {
    return [&, call](int r, Comm& c) {
      try {
        call(r, c, devs[size_t(r)].get());
      } catch (const Error& e) {
        seen[size_t(r)] = e.what();
        throw;
      }
    };
  };
  // Rank 2 passes one element more.
  REQUIRE_THROWS_WITH(
      dist::run_ranks(n, run([&](int r, Comm& c, Device* d) {
                        int64_t count = r == 2 ? 11 : 10;
                        c.all_reduce_sum(TensorView(bufs[size_t(r)].data(), DType::f32, {count}, d),
                                         d->stream());
                      })),
      Contains("ranks disagree") && Contains("10 elements") && Contains("rank 2") &&
          Contains("11 elements"));
  for (int r = 0; r < n; ++r) CHECK_THAT(seen[size_t(r)], Contains("ranks disagree"));
  // Rank 0 broadcasts while the others wait in a barrier.
  REQUIRE_THROWS_WITH(dist::run_ranks(n, run([&](int r, Comm& c, Device* d) {
                                        if (r == 0)
                                          c.broadcast(TensorView(bufs[0].data(), DType::f32, {4}, d),
                                                      0, d->stream());
                                        else
                                          c.barrier(d->stream());
                                      })),
                      Contains("broadcast") && Contains("barrier"));
}

TEST_CASE("a rank that returns while others wait in a collective fails them", "[cpu][dist]") {
  Watchdog watchdog(10, "early return");
  auto devs = make_devices(3);
  REQUIRE_THROWS_WITH(dist::run_ranks(3,
                                      [&](int r, Comm& c) {
                                        c.barrier(devs[size_t(r)]->stream());
                                        if (r != 2) c.barrier(devs[size_t(r)]->stream());
                                      }),
                      Contains("rank 2 returned while other ranks wait"));
}

TEST_CASE("ranks that all finish normally do not trip the early-return check", "[cpu][dist]") {
  Watchdog watchdog(10, "normal finish");
  auto devs = make_devices(4);
  for (int round = 0; round < 50; ++round)
    dist::run_ranks(4, [&](int r, Comm& c) {
      for (int k = 0; k < 3; ++k) c.barrier(devs[size_t(r)]->stream());
    });
}

TEST_CASE("rendezvous file: atomic write, wait, timeout and size errors", "[cpu][dist]") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("strata_dist_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string path = (dir / "nccl_id").string();
  unsigned char blob[128];
  for (int i = 0; i < 128; ++i) blob[i] = static_cast<unsigned char>(i * 7 + 1);

  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    dist::detail::write_file_atomically(path, blob, sizeof(blob));
  });
  auto got = dist::detail::wait_for_file(path, sizeof(blob), 10.0);
  writer.join();
  REQUIRE(got.size() == sizeof(blob));
  CHECK(std::memcmp(got.data(), blob, sizeof(blob)) == 0);
  for (auto& e : fs::directory_iterator(dir))  // no temp file left behind
    CHECK(e.path().filename() == "nccl_id");

  REQUIRE_THROWS_WITH(dist::detail::wait_for_file(path, 64, 1.0),
                      Contains(path) && Contains("128 bytes") && Contains("expected 64"));
  REQUIRE_THROWS_WITH(dist::detail::wait_for_file((dir / "absent").string(), 128, 0.05),
                      Contains("timed out") && Contains("absent"));
  REQUIRE_THROWS_WITH(dist::detail::write_file_atomically((dir / "no/such/dir").string(), blob, 4),
                      Contains("open") && Contains("no/such/dir"));
  fs::remove_all(dir);
}

TEST_CASE("NCCL communicators fail clearly without a GPU", "[cpu][dist]") {
  if (cuda_device_count() > 0) {
    skip_test("a GPU is present: NCCL is exercised by the GPU tests instead");
    return;
  }
  REQUIRE_THROWS_AS(dist::make_nccl_comms({0}), Error);
  if (!built_with_cuda())
    REQUIRE_THROWS_WITH(dist::make_nccl_comms({0}), Contains("built without NCCL"));
}

}  // namespace
}  // namespace strata::test
