// strata-bench: a tiny benchmark registry and the timing / reporting helpers every
// benchmark file shares. A file registers its benchmarks with
//   STRATA_BENCH("elementwise", bench_elementwise);
// and `strata-bench [filter...]` runs those whose name contains a filter (with no
// filter: all but those registered with STRATA_BENCH_ON_REQUEST, which need too
// much memory or time to run unasked).
// Invariant: speed is measured here, never asserted; a benchmark prints a table and
// returns. Times are the minimum of several runs after warm-up, so one slow run
// (a page fault, another process) does not count.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/tensor.h"

namespace strata::bench {

// ---- registry

// A benchmark runs on the CPU device, or (cuda) on the GPU `--device cuda:N` names.
struct Benchmark {
  std::string name;
  void (*run)();
  bool cuda = false;
  bool on_request = false;  // runs only when a filter names it
};

std::vector<Benchmark>& registry();

struct Register {
  Register(const char* name, void (*run)(), bool cuda = false, bool on_request = false) {
    registry().push_back({name, run, cuda, on_request});
  }
};

#define STRATA_BENCH_CAT2(a, b) a##b
#define STRATA_BENCH_CAT(a, b) STRATA_BENCH_CAT2(a, b)
#define STRATA_BENCH(name, fn) \
  static ::strata::bench::Register STRATA_BENCH_CAT(strata_bench_, __LINE__)(name, fn)
#define STRATA_BENCH_CUDA(name, fn) \
  static ::strata::bench::Register STRATA_BENCH_CAT(strata_bench_, __LINE__)(name, fn, true)
#define STRATA_BENCH_ON_REQUEST(name, fn) \
  static ::strata::bench::Register STRATA_BENCH_CAT(strata_bench_, __LINE__)(name, fn, false, true)

// The CUDA device index `--device cuda:N` chose; -1 when benchmarks run on the CPU.
int& cuda_index();

// ---- command-line options (strata-bench --help lists them)

struct Options {
  std::string sizes;  // --sizes: a list of counts, e.g. "64M,256M"; empty: the benchmark's own
  int threads = 0;    // --threads; 0: the benchmark's own
};
const Options& options();

// "64M" -> 64 * 2^20; K, M, G are powers of 2, as in tools/bench/peer/torch_adamw.py;
// a plain integer is taken as is. Throws strata::Error on anything else.
int64_t parse_count(const std::string& text);
std::vector<int64_t> parse_counts(const std::string& comma_separated);

// ---- timing

// Seconds per call of f: `warmup` calls untimed, then at least `min_runs` timed
// calls and until `min_total` seconds have passed; the fastest call counts.
template <class F>
double min_seconds(F&& f, int warmup = 2, int min_runs = 5, double min_total = 0.2) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) f();
  double best = 1e300, total = 0;
  for (int runs = 0; runs < min_runs || total < min_total; ++runs) {
    auto t0 = Clock::now();
    f();
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = s < best ? s : best;
    total += s;
  }
  return best;
}

// "123.4 GB/s" (bytes moved per second, 1 GB = 1e9 B), "12.3 GFLOP/s", "1.23 ms".
std::string format_gbps(double bytes, double seconds);
std::string format_gflops(double flops, double seconds);
std::string format_seconds(double seconds);
std::string format_ratio(double ratio);  // "0.87x"
std::string format_fixed(double value, int digits);  // "12.345" for digits 3

// ---- tables

// Columns sized to their widest cell; text left-aligned, numbers right-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print(const std::string& title) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// ---- NVMe

// fio's sequential bandwidth in bytes/s on `file` (io_uring, O_DIRECT, one job;
// fio lays the file out first when it is shorter), or -1 when fio is missing or
// failed. The figure strata's NVMe numbers are held against (bench_io.cpp).
// huge_pages: fio's buffers from HugePages (--iomem=mmaphuge), which must be
// reserved first (/proc/sys/vm/nr_hugepages); else malloc'd 4 KiB pages.
double fio_pass(const std::string& file, uint64_t size, size_t block, int qd, bool write, bool huge_pages = false);

// ---- memory-bound ops next to memcpy

// Device memory filled with values in [lo, hi) (a cheap hash, not a quality RNG).
class BenchTensor {
 public:
  BenchTensor(Device& device, DType dtype, std::initializer_list<int64_t> shape, float lo = -1.0f,
              float hi = 1.0f);
  const TensorView& view() const { return view_; }

 private:
  Buffer buffer_;
  TensorView view_;
};

// The CPU device benchmarks run on.
Device& bench_device();

// Headers of a bandwidth table, and one row: the op's time and GB/s for `bytes`
// read + written per call, beside a parallel memcpy moving the same bytes (bytes/2
// read, bytes/2 written) in the same run, and op / memcpy.
Table bandwidth_table();
void bandwidth_row(Table& table, const std::string& op, const std::string& dtypes, int64_t elements,
                   double bytes, const std::function<void()>& run);

}  // namespace strata::bench
