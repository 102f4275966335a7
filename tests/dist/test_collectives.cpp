// CPU communicator collectives against naive references: every rank count 1..4, f32
// and bf16, sizes 1, 17, 1000 and one past the 2048-element reduction block. Sums are
// expected BITWISE equal to the ranks-in-order f32 sum (the documented order), and
// close to a double-precision sum; repeated runs with jittered thread timing must
// give identical bits; byte counters must follow the ring formulas in dist.h. The
// asynchronous forms, several in flight at once, give the same bits.
#include <catch2/catch.hpp>
#include <atomic>
#include <cmath>

#include "dist_test_util.h"
#include "strata/dist.h"
#include "strata/error.h"

namespace strata::test {
namespace {

using dist::Comm;

const DType kDtypes[] = {DType::f32, DType::bf16};

// out[i] = round(((x_0 + x_1) + ...) + x_{N-1}) with f32 accumulation, ranks in order.
std::vector<float> ordered_sum(const std::vector<HostBuf>& in, int64_t begin, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float acc = in[0].get(begin + i);
    for (size_t k = 1; k < in.size(); ++k) acc += in[k].get(begin + i);
    out[size_t(i)] = acc;
  }
  return out;
}

double double_sum(const std::vector<HostBuf>& in, int64_t i) {
  double acc = 0;
  for (auto& b : in) acc += double(b.get(i));
  return acc;
}

// The ordered f32 sum rounded once to dtype must match bit for bit; the double sum
// bounds the error of that order (so a wrong-but-consistent reduction also fails).
void expect_sum(const HostBuf& got, int64_t got_begin, const std::vector<HostBuf>& in,
                int64_t begin, int64_t n) {
  auto ref = ordered_sum(in, begin, n);
  HostBuf rounded(got.dtype, n);
  for (int64_t i = 0; i < n; ++i) rounded.set(i, ref[size_t(i)]);
  size_t elt = dtype_size(got.dtype);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* g = got.bytes.data() + size_t(got_begin + i) * elt;
    if (std::memcmp(g, rounded.bytes.data() + size_t(i) * elt, elt) != 0 && bad++ < 3) {
      INFO("element " << i);
      CHECK(got.get(got_begin + i) == rounded.get(i));
    }
  }
  CHECK(bad == 0);
  double tol = got.dtype == DType::bf16 ? 1.0 / 128 : 1e-6;
  for (int64_t i = 0; i < n; ++i) {
    double want = double_sum(in, begin + i), scale = 0;
    for (auto& b : in) scale += std::fabs(double(b.get(begin + i)));
    if (std::fabs(double(got.get(got_begin + i)) - want) > tol * scale + 1e-30) {
      FAIL("element " << i << " far from the double-precision sum: " << got.get(got_begin + i)
                      << " vs " << want);
    }
  }
}

TEST_CASE("all_reduce_sum matches the ordered sum on every rank", "[cpu][dist]") {
  for (int n = 1; n <= 4; ++n)
    for (DType t : kDtypes)
      for (int64_t count : {int64_t(1), int64_t(17), int64_t(1000), int64_t(2049)}) {
        CAPTURE(n, dtype_name(t), count);
        auto devs = make_devices(n);
        std::vector<HostBuf> in, bufs;
        for (int r = 0; r < n; ++r) in.push_back(random_buf(t, count, 100 + r));
        bufs = in;
        dist::run_ranks(n, [&](int r, Comm& c) {
          c.all_reduce_sum(bufs[size_t(r)].view(devs[size_t(r)].get()), devs[size_t(r)]->stream());
        });
        for (int r = 0; r < n; ++r) expect_sum(bufs[size_t(r)], 0, in, 0, count);
      }
}

TEST_CASE("reduce_scatter_sum gives each rank its shard of the sum", "[cpu][dist]") {
  for (int n = 1; n <= 4; ++n)
    for (DType t : kDtypes)
      for (int64_t shard : {int64_t(1), int64_t(17), int64_t(1000)}) {
        CAPTURE(n, dtype_name(t), shard);
        auto devs = make_devices(n);
        std::vector<HostBuf> in, out;
        for (int r = 0; r < n; ++r) {
          in.push_back(random_buf(t, shard * n, 200 + r));
          out.emplace_back(t, shard);
        }
        dist::run_ranks(n, [&](int r, Comm& c) {
          Device* d = devs[size_t(r)].get();
          c.reduce_scatter_sum(in[size_t(r)].view(d), out[size_t(r)].view(d), d->stream());
        });
        for (int r = 0; r < n; ++r) expect_sum(out[size_t(r)], 0, in, r * shard, shard);
      }
}

TEST_CASE("reduce_scatter_sum in place writes the shard where it lies in the input",
          "[cpu][dist]") {
  const int n = 3;
  const int64_t shard = 17;
  auto devs = make_devices(n);
  std::vector<HostBuf> in, bufs;
  for (int r = 0; r < n; ++r) in.push_back(random_buf(DType::f32, shard * n, 300 + r));
  bufs = in;
  dist::run_ranks(n, [&](int r, Comm& c) {
    Device* d = devs[size_t(r)].get();
    TensorView all = bufs[size_t(r)].view(d);
    TensorView mine = all.slice_rows(r * shard, (r + 1) * shard);
    c.reduce_scatter_sum(all, mine, d->stream());
  });
  for (int r = 0; r < n; ++r) expect_sum(bufs[size_t(r)], r * shard, in, r * shard, shard);
}

TEST_CASE("all_gather concatenates the ranks' inputs rank-major", "[cpu][dist]") {
  for (int n = 1; n <= 4; ++n)
    for (DType t : kDtypes)
      for (int64_t shard : {int64_t(1), int64_t(17), int64_t(1000)})
        for (bool in_place : {false, true}) {
          CAPTURE(n, dtype_name(t), shard, in_place);
          auto devs = make_devices(n);
          std::vector<HostBuf> in, out;
          for (int r = 0; r < n; ++r) {
            in.push_back(random_buf(t, shard, 400 + r));
            out.push_back(random_buf(t, shard * n, 500 + r));  // garbage to overwrite
            if (in_place)  // the NCCL in-place form: in == out + rank * shard
              std::memcpy(out.back().bytes.data() + size_t(r * shard) * dtype_size(t),
                          in.back().bytes.data(), in.back().bytes.size());
          }
          dist::run_ranks(n, [&](int r, Comm& c) {
            Device* d = devs[size_t(r)].get();
            TensorView o = out[size_t(r)].view(d);
            TensorView i = in_place ? o.slice_rows(r * shard, (r + 1) * shard) : in[size_t(r)].view(d);
            c.all_gather(i, o, d->stream());
          });
          for (int r = 0; r < n; ++r)
            for (int k = 0; k < n; ++k) {
              CAPTURE(r, k);
              CHECK(std::memcmp(out[size_t(r)].bytes.data() + size_t(k * shard) * dtype_size(t),
                                in[size_t(k)].bytes.data(), in[size_t(k)].bytes.size()) == 0);
            }
        }
}

TEST_CASE("broadcast copies the root's buffer to every rank", "[cpu][dist]") {
  for (int n = 1; n <= 4; ++n)
    for (int root = 0; root < n; ++root)
      for (DType t : kDtypes)
        for (int64_t count : {int64_t(1), int64_t(17), int64_t(1000)}) {
          CAPTURE(n, root, dtype_name(t), count);
          auto devs = make_devices(n);
          std::vector<HostBuf> bufs;
          for (int r = 0; r < n; ++r) bufs.push_back(random_buf(t, count, 600 + r));
          HostBuf want = bufs[size_t(root)];
          dist::run_ranks(n, [&](int r, Comm& c) {
            Device* d = devs[size_t(r)].get();
            c.broadcast(bufs[size_t(r)].view(d), root, d->stream());
          });
          for (int r = 0; r < n; ++r) CHECK(bufs[size_t(r)].bytes == want.bytes);
        }
}

TEST_CASE("barrier: no rank leaves before every rank has arrived", "[cpu][dist]") {
  const int n = 4;
  auto devs = make_devices(n);
  std::atomic<int> arrived{0};
  std::atomic<int> early{0};
  dist::run_ranks(n, [&](int r, Comm& c) {
    for (int round = 1; round <= 20; ++round) {
      if ((r + round) % n == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      arrived.fetch_add(1);
      c.barrier(devs[size_t(r)]->stream());
      if (arrived.load() < round * n) early.fetch_add(1);
      c.barrier(devs[size_t(r)]->stream());  // nobody starts the next round early
    }
  });
  CHECK(early.load() == 0);
}

TEST_CASE("collectives are bitwise reproducible whatever the thread timing", "[cpu][dist]") {
  const int n = 4;
  const int64_t count = 10007;
  auto devs = make_devices(n);
  for (DType t : kDtypes) {
    CAPTURE(dtype_name(t));
    std::vector<HostBuf> in;
    for (int r = 0; r < n; ++r) in.push_back(random_buf(t, count, 700 + r));
    // The test only means something if summation order changes some result.
    int64_t order_sensitive = 0;
    for (int64_t i = 0; i < count; ++i) {
      float fwd = 0, bwd = 0;
      for (int r = 0; r < n; ++r) fwd += in[size_t(r)].get(i);
      for (int r = n - 1; r >= 0; --r) bwd += in[size_t(r)].get(i);
      order_sensitive += fwd != bwd;
    }
    REQUIRE(order_sensitive > 0);

    std::vector<unsigned char> first_reduce, first_scatter;
    std::mt19937 jitter_rng(1);
    for (int run = 0; run < 10; ++run) {
      std::vector<HostBuf> bufs = in;
      std::vector<HostBuf> shards(size_t(n), HostBuf(t, count / n));
      std::vector<int> delay_us(static_cast<size_t>(n));
      for (auto& d : delay_us) d = int(jitter_rng() % 300);
      dist::run_ranks(n, [&](int r, Comm& c) {
        Device* d = devs[size_t(r)].get();
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us[size_t(r)]));
        TensorView head = in[size_t(r)].view(d).reshape({count}).slice_rows(0, count / n * n);
        c.reduce_scatter_sum(head, shards[size_t(r)].view(d), d->stream());
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us[size_t(n - 1 - r)]));
        c.all_reduce_sum(bufs[size_t(r)].view(d), d->stream());
      });
      std::vector<unsigned char> scatter;
      for (auto& s : shards) scatter.insert(scatter.end(), s.bytes.begin(), s.bytes.end());
      for (int r = 1; r < n; ++r) REQUIRE(bufs[size_t(r)].bytes == bufs[0].bytes);
      if (run == 0) {
        first_reduce = bufs[0].bytes;
        first_scatter = scatter;
        expect_sum(bufs[0], 0, in, 0, count);
      } else {
        CHECK(bufs[0].bytes == first_reduce);
        CHECK(scatter == first_scatter);
      }
    }
  }
}

TEST_CASE("byte counters follow the ring formulas", "[cpu][dist]") {
  for (int n = 1; n <= 4; ++n)
    for (DType t : kDtypes) {
      CAPTURE(n, dtype_name(t));
      const int64_t count = 1000 * n + 3 * (n > 1);  // all-reduce size not a multiple of n
      const int64_t shard = 17;
      const int root = n - 1;
      auto devs = make_devices(n);
      auto comms = dist::make_cpu_comms(n);
      std::vector<HostBuf> big, full, part;
      for (int r = 0; r < n; ++r) {
        big.push_back(random_buf(t, count, 800 + r));
        full.emplace_back(t, shard * n);
        part.emplace_back(t, shard);
      }
      const uint64_t elt = dtype_size(t), N = uint64_t(n);
      const uint64_t B = uint64_t(count) * elt;           // all-reduce / broadcast buffer
      const uint64_t F = uint64_t(shard * n) * elt;       // full reduce-scatter / gather size
      // Counters observed by each rank after each step, checked on this thread
      // (Catch assertions are not thread-safe).
      struct Seen {
        uint64_t all_reduce[2], reduce_scatter[2], all_gather[2], barrier[2], broadcast[2];
      };
      std::vector<Seen> seen(static_cast<size_t>(n));
      auto take = [](Comm& c, uint64_t* out) {
        out[0] = c.bytes_sent();
        out[1] = c.bytes_received();
        c.reset_bytes();
      };
      dist::run_ranks(comms, [&](int r, Comm& c) {
        Device* d = devs[size_t(r)].get();
        Stream& s = d->stream();
        Seen& me = seen[size_t(r)];
        c.all_reduce_sum(big[size_t(r)].view(d), s);
        take(c, me.all_reduce);
        c.reduce_scatter_sum(full[size_t(r)].view(d), part[size_t(r)].view(d), s);
        take(c, me.reduce_scatter);
        c.all_gather(part[size_t(r)].view(d), full[size_t(r)].view(d), s);
        take(c, me.all_gather);
        c.barrier(s);
        take(c, me.barrier);
        c.broadcast(big[size_t(r)].view(d), root, s);
        take(c, me.broadcast);
      });
      std::vector<uint64_t> sent, received;
      for (int r = 0; r < n; ++r) {
        CAPTURE(r);
        const Seen& m = seen[size_t(r)];
        for (int k = 0; k < 2; ++k) {  // sent, then received: equal in a ring
          CHECK(m.all_reduce[k] == 2 * (N - 1) * B / N);
          CHECK(m.reduce_scatter[k] == (N - 1) * F / N);
          CHECK(m.all_gather[k] == (N - 1) * F / N);
          CHECK(m.barrier[k] == 0);
        }
        sent.push_back(m.broadcast[0]);
        received.push_back(m.broadcast[1]);
        CHECK(comms[size_t(r)]->bytes_sent() == 0);  // reset_bytes worked
      }
      uint64_t total_sent = 0, total_received = 0;
      for (int r = 0; r < n; ++r) {
        total_sent += sent[size_t(r)];
        total_received += received[size_t(r)];
        bool last = r == (root + n - 1) % n;
        CHECK(sent[size_t(r)] == (n == 1 || last ? 0 : B));
        CHECK(received[size_t(r)] == (n == 1 || r == root ? 0 : B));
      }
      CHECK(total_sent == (N - 1) * B);  // a broadcast delivers B to each of N-1 ranks
      CHECK(total_received == (N - 1) * B);
    }
}

TEST_CASE("asynchronous collectives in flight together give the synchronous results", "[cpu][dist]") {
  const int64_t count = 2049;  // one past the reduction block
  for (int n = 1; n <= 4; ++n)
    for (DType t : kDtypes) {
      CAPTURE(n, dtype_name(t));
      auto devs = make_devices(n);
      std::vector<HostBuf> in, reduced, shard, gathered, bcast;
      for (int r = 0; r < n; ++r) {
        in.push_back(random_buf(t, count * n, 700 + r));
        reduced.push_back(in.back());
        shard.emplace_back(t, count);
        gathered.emplace_back(t, count * n);
        bcast.push_back(random_buf(t, count, 800 + r));
      }
      std::vector<HostBuf> bcast_in = bcast;
      std::vector<int> done_before_wait(size_t(n), 0);
      dist::run_ranks(n, [&](int r, Comm& c) {
        Device* d = devs[size_t(r)].get();
        Stream& s = d->stream();
        TensorView x = in[size_t(r)].view(d);
        // Four collectives in flight; none is waited for before the last is issued.
        dist::Work w[4] = {c.all_reduce_sum_async(reduced[size_t(r)].view(d), s),
                           c.reduce_scatter_sum_async(x, shard[size_t(r)].view(d), s),
                           c.all_gather_async(x.slice_rows(0, count), gathered[size_t(r)].view(d), s),
                           c.broadcast_async(bcast[size_t(r)].view(d), n - 1, s)};
        for (dist::Work& k : w) k.wait();
        for (dist::Work& k : w) done_before_wait[size_t(r)] += k.test() ? 1 : 0;
      });
      for (int r = 0; r < n; ++r) {
        CAPTURE(r);
        CHECK(done_before_wait[size_t(r)] == 4);  // test() is true once waited for
        expect_sum(reduced[size_t(r)], 0, in, 0, count * n);
        expect_sum(shard[size_t(r)], 0, in, r * count, count);
        for (int k = 0; k < n; ++k)
          CHECK(std::memcmp(gathered[size_t(r)].bytes.data() + size_t(k * count) * dtype_size(t),
                            in[size_t(k)].bytes.data(), size_t(count) * dtype_size(t)) == 0);
        CHECK(bcast[size_t(r)].bytes == bcast_in[size_t(n - 1)].bytes);
      }
    }
  CHECK(dist::Work().test());  // a default Work is done
}

TEST_CASE("an asynchronous collective the ranks disagree on fails in wait on every rank", "[cpu][dist]") {
  auto devs = make_devices(2);
  std::vector<HostBuf> bufs = {random_buf(DType::f32, 8, 1), random_buf(DType::f32, 8, 2)};
  std::atomic<int> failed{0};
  dist::run_ranks(2, [&](int r, Comm& c) {
    Device* d = devs[size_t(r)].get();
    dist::Work w = r == 0 ? c.all_reduce_sum_async(bufs[0].view(d), d->stream())
                          : c.broadcast_async(bufs[1].view(d), 0, d->stream());
    try {
      w.wait();
    } catch (const Error& e) {
      if (std::string(e.what()).find("ranks disagree on the collective") != std::string::npos) ++failed;
    }
  });
  CHECK(failed == 2);
}

}  // namespace
}  // namespace strata::test
