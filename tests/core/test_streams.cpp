// Streams and events on CPU devices (lib/core/stream.cpp): every device has one
// stream per role, the compute stream inline and the others worker queues; items of a
// stream run in FIFO order, an Event orders one stream after another without blocking
// the host, query / synchronize / elapsed_ms say what completed when, and the
// ordering fuzz leaves every correctly ordered result unchanged under many seeds.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <future>
#include <numeric>
#include <thread>
#include <vector>

#include "strata/device.h"
#include "strata/error.h"

namespace strata::test {
namespace {

using Catch::Contains;

// Turns the ordering fuzz on for one scope (and off after, whatever the environment).
struct FuzzScope {
  explicit FuzzScope(uint64_t seed) : before(stream_fuzz()) { set_stream_fuzz(seed); }
  ~FuzzScope() { set_stream_fuzz(before); }
  uint64_t before;
};

TEST_CASE("a CPU device has an inline compute stream and a worker per other role", "[core][stream]") {
  auto device = Device::cpu(2);
  CHECK(&device->stream() == &device->stream(StreamRole::compute));
  CHECK_FALSE(device->stream().is_worker());
  for (StreamRole r : {StreamRole::host_to_device, StreamRole::device_to_host, StreamRole::communication}) {
    Stream& s = device->stream(r);
    CHECK(s.is_worker());
    CHECK(s.role() == r);
    CHECK(&s.device() == device.get());
    CHECK(s.native() == nullptr);
  }
  CHECK(std::string(stream_role_name(StreamRole::device_to_host)) == "device_to_host");
  // The compute stream runs an item before returning.
  int ran = 0;
  device->stream().host_function([&] { ran = 1; });
  CHECK(ran == 1);
}

TEST_CASE("a worker stream runs its items in FIFO order under the ordering fuzz", "[core][stream]") {
  auto device = Device::cpu();
  Stream& s = device->stream(StreamRole::host_to_device);
  for (uint64_t seed : {0ull, 1ull, 2ull, 3ull}) {
    FuzzScope fuzz(seed);
    std::vector<int> order;
    std::vector<int> sources(40);
    std::iota(sources.begin(), sources.end(), 100);
    int slot = -1;
    for (int i = 0; i < 40; ++i) {
      s.host_function([&order, i] { order.push_back(i); });  // only the worker touches `order`
      s.copy(&slot, &sources[size_t(i)], sizeof(int));        // the last copy wins
    }
    s.synchronize();
    std::vector<int> expected(40);
    std::iota(expected.begin(), expected.end(), 0);
    CHECK(order == expected);
    CHECK(slot == 139);
  }
}

TEST_CASE("an event orders one worker stream after another, bitwise under many fuzz seeds", "[core][stream]") {
  auto device = Device::cpu();
  Stream& in = device->stream(StreamRole::host_to_device);
  Stream& out = device->stream(StreamRole::device_to_host);
  std::vector<float> source(1 << 16), middle(source.size()), result(source.size());
  for (size_t i = 0; i < source.size(); ++i) source[i] = float(i) * 0.5f;
  Event copied(*device);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    FuzzScope fuzz(seed);
    std::fill(middle.begin(), middle.end(), -1.0f);
    std::fill(result.begin(), result.end(), -1.0f);
    in.copy(middle.data(), source.data(), source.size() * 4);
    copied.record(in);
    copied.wait(out);  // without it `out` would copy `middle` while it is written
    out.copy(result.data(), middle.data(), middle.size() * 4);
    out.synchronize();
    REQUIRE(result == source);
  }
}

TEST_CASE("the compute stream waiting on an event blocks its caller until the event completes", "[core][stream]") {
  auto device = Device::cpu();
  Stream& in = device->stream(StreamRole::host_to_device);
  FuzzScope fuzz(7);
  std::vector<int> src(1000, 42), dst(1000, 0);
  Event done(*device);
  for (int round = 0; round < 10; ++round) {
    std::fill(dst.begin(), dst.end(), 0);
    in.copy(dst.data(), src.data(), dst.size() * sizeof(int));
    done.record(in);
    done.wait(device->stream());  // inline: the caller is the compute stream
    CHECK(done.query());
    REQUIRE(dst == src);
  }
  in.synchronize();
}

TEST_CASE("an event reports completion through query, synchronize and its timestamps", "[core][stream]") {
  auto device = Device::cpu();
  Stream& s = device->stream(StreamRole::device_to_host);
  Event a(*device), b(*device);
  CHECK(a.query());  // never recorded: done, as in CUDA
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  s.host_function([opened] { opened.wait(); });
  a.record(s);
  CHECK_FALSE(a.query());  // the gate holds the worker: the record cannot have run
  // A stream waiting on `a` does not block the host either.
  Stream& other = device->stream(StreamRole::host_to_device);
  a.wait(other);
  int after = 0;
  other.host_function([&] { after = 1; });
  b.record(other);
  CHECK_FALSE(b.query());
  gate.set_value();
  b.synchronize();
  CHECK(a.query());
  CHECK(after == 1);
  CHECK(a.completed_at() <= b.completed_at());
  // elapsed_ms spans what ran between the records.
  a.record(s);
  s.host_function([] { std::this_thread::sleep_for(std::chrono::milliseconds(5)); });
  b.record(s);
  CHECK(a.elapsed_ms(b) >= 5.0f);
}

TEST_CASE("a worker item's error comes back from synchronize, once", "[core][stream]") {
  auto device = Device::cpu();
  Stream& s = device->stream(StreamRole::communication);
  int later = 0;
  s.host_function([] { STRATA_FAIL("the item failed"); });
  s.host_function([&] { later = 1; });  // items after a failure still run
  REQUIRE_THROWS_WITH(s.synchronize(), Contains("the item failed"));
  CHECK(later == 1);
  s.synchronize();  // rethrown once
}

TEST_CASE("events refuse streams of another device and unrecorded timings", "[core][stream]") {
  auto a = Device::cpu(0), b = Device::cpu(1);
  Event e(*a);
  REQUIRE_THROWS_WITH(e.record(b->stream(StreamRole::host_to_device)),
                      Contains("belongs to cpu:0") && Contains("cpu:1") && Contains("an Event for each device"));
  REQUIRE_THROWS_WITH(e.wait(b->stream()), Contains("Event::wait"));
  Event f(*a);
  REQUIRE_THROWS_WITH(e.elapsed_ms(f), Contains("never recorded"));
  Event g(*b);
  REQUIRE_THROWS_WITH(e.elapsed_ms(g), Contains("cpu:0") && Contains("cpu:1"));
}

// Runs this binary's hidden case below with STRATA_STREAM_FUZZ=`value`; returns its
// exit status and output (the environment is read once per process, hence the child).
int run_fuzz_child(const char* value, std::string& output) {
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setenv("STRATA_STREAM_FUZZ", value, 1);
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    ::close(pipe_fds[0]);
    ::execl("/proc/self/exe", "test_core", "stream fuzz child: make a CPU device and print the seed",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  char chunk[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], chunk, sizeof chunk)) > 0;) output.append(chunk, size_t(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Hidden ([.]): the child of the test below.
TEST_CASE("stream fuzz child: make a CPU device and print the seed", "[.][core][stream]") {
  auto device = Device::cpu();
  std::printf("fuzz seed %llu\n", static_cast<unsigned long long>(stream_fuzz()));
}

TEST_CASE("STRATA_STREAM_FUZZ takes a non-negative decimal seed and refuses anything else by name",
          "[core][stream]") {
  for (const char* good : {"0", "7", "18446744073709551615"}) {
    std::string out;
    const int status = run_fuzz_child(good, out);
    INFO("STRATA_STREAM_FUZZ=" << good << ", child output:\n" << out);
    CHECK(status == 0);
    CHECK_THAT(out, Contains(std::string("fuzz seed ") + good + "\n"));
  }
  for (const char* bad : {"abc", "-1", "+3", "1x", " 5", "18446744073709551616"}) {
    std::string out;
    const int status = run_fuzz_child(bad, out);
    INFO("STRATA_STREAM_FUZZ=" << bad << ", child output:\n" << out);
    CHECK(status != 0);
    CHECK_THAT(out, Contains(std::string("STRATA_STREAM_FUZZ=") + bad + ": not a non-negative decimal integer"));
    CHECK_THAT(out, !Contains("fuzz seed"));
  }
}

}  // namespace
}  // namespace strata::test
