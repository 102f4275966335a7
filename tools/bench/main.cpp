// strata-bench: runs the registered benchmarks (all, or those whose name contains
// one of the filters given) on the CPU, or with --device cuda:N those that run on a
// GPU, and implements the shared helpers of bench.h.
// Invariant: the output is tables for people; nothing here decides pass or fail.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>

#include "bench.h"
#include "kernels/cpu/util.h"
#include "strata/error.h"

namespace strata::bench {

std::vector<Benchmark>& registry() {
  static std::vector<Benchmark> benchmarks;
  return benchmarks;
}

int& cuda_index() {
  static int index = -1;
  return index;
}

namespace {
Options& mutable_options() {  // main() fills it, benchmarks read it
  static Options o;
  return o;
}
}  // namespace
const Options& options() { return mutable_options(); }

int64_t parse_count(const std::string& text) {
  size_t used = 0;
  long long value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
  }
  const std::string suffix = value >= 0 ? text.substr(used) : "";
  const int shift = suffix.empty() ? 0 : suffix == "K" || suffix == "k" ? 10 : suffix == "M" || suffix == "m" ? 20
                                                                         : suffix == "G" || suffix == "g" ? 30 : -1;
  STRATA_CHECK(value > 0 && shift >= 0 && value <= (int64_t(1) << (62 - shift)),
               "'" << text << "' is not a count; give a positive integer with an optional K, M or G (powers of 2), "
                               "e.g. 64M or 1G");
  return int64_t(value) << shift;
}

std::vector<int64_t> parse_counts(const std::string& comma_separated) {
  std::vector<int64_t> counts;
  std::stringstream in(comma_separated);
  for (std::string item; std::getline(in, item, ',');) counts.push_back(parse_count(item));
  STRATA_CHECK(!counts.empty(), "'" << comma_separated << "' lists no count; give e.g. 64M,256M");
  return counts;
}

namespace {
bool numeric(const std::string& cell) {
  return !cell.empty() && (std::isdigit(static_cast<unsigned char>(cell[0])) || cell[0] == '-' || cell[0] == '.');
}
}  // namespace

std::string format_gbps(double bytes, double seconds) { return format_fixed(bytes / seconds / 1e9, 1) + " GB/s"; }
std::string format_gflops(double flops, double seconds) { return format_fixed(flops / seconds / 1e9, 1) + " GFLOP/s"; }
std::string format_ratio(double ratio) { return format_fixed(ratio, 2) + "x"; }
std::string format_fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string format_seconds(double s) {
  if (s >= 1.0) return format_fixed(s, 2) + " s";
  if (s >= 1e-3) return format_fixed(s * 1e3, 2) + " ms";
  return format_fixed(s * 1e6, 1) + " us";
}

void Table::print(const std::string& title) const {
  std::vector<size_t> width(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) width[c] = headers_[c].size();
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    std::string out;
    for (size_t c = 0; c < width.size(); ++c) {
      std::string cell = c < cells.size() ? cells[c] : "";
      std::string pad(width[c] - cell.size(), ' ');
      out += (c ? "  " : "") + (!header && numeric(cell) ? pad + cell : cell + pad);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    std::cout << out << "\n";
  };
  std::cout << "\n" << title << "\n";
  line(headers_, true);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  std::cout << std::string(total - 2, '-') << "\n";
  for (const auto& r : rows_) line(r, false);
  std::cout.flush();
}

Device& bench_device() {
  static std::unique_ptr<Device> device = Device::cpu(0);
  return *device;
}

BenchTensor::BenchTensor(Device& device, DType dtype, std::initializer_list<int64_t> shape, float lo, float hi)
    : view_(nullptr, dtype, shape, &device) {
  buffer_ = Buffer(device, view_.nbytes(), "benchmark tensor");
  view_.data = buffer_.data();
  const float span = hi - lo;
  char* base = static_cast<char*>(view_.data);
  cpu::parallel_for(view_.numel(), int64_t(1) << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float u = float((uint32_t(i) * 2654435761u) >> 8) * 5.9604644775390625e-8f;  // [0, 1)
      float x = lo + span * u;
      switch (dtype) {
        case DType::f32: reinterpret_cast<float*>(base)[i] = x; break;
        case DType::bf16: reinterpret_cast<uint16_t*>(base)[i] = strata::float_to_bf16(x); break;
        case DType::f16: reinterpret_cast<uint16_t*>(base)[i] = strata::float_to_f16(x); break;
        case DType::i32: reinterpret_cast<int32_t*>(base)[i] = int32_t(x); break;
      }
    }
  });
}

Table bandwidth_table() {
  return Table({"op", "dtype", "elements", "MB moved", "time", "op GB/s", "memcpy GB/s", "op/memcpy"});
}

void bandwidth_row(Table& table, const std::string& op, const std::string& dtypes, int64_t elements,
                   double bytes, const std::function<void()>& run) {
  // memcpy of bytes/2: the same bytes crossing the memory bus, split across cores
  // like the op, so the ratio compares like with like.
  const int64_t half = int64_t(bytes / 2);
  Buffer src(bench_device(), size_t(half), "memcpy source"), dst(bench_device(), size_t(half), "memcpy target");
  std::memset(src.data(), 1, size_t(half));
  char* to = static_cast<char*>(dst.data());
  const char* from = static_cast<const char*>(src.data());
  auto copy = [&] {
    cpu::parallel_for(half, int64_t(1) << 20, [&](int64_t begin, int64_t end) {
      std::memcpy(to + begin, from + begin, size_t(end - begin));
    });
  };
  double op_s = min_seconds(run), copy_s = min_seconds(copy);
  table.row({op, dtypes, std::to_string(elements), format_fixed(bytes / 1e6, 1), format_seconds(op_s),
             format_gbps(bytes, op_s), format_gbps(bytes, copy_s), format_ratio(copy_s / op_s)});
}

}  // namespace strata::bench

namespace {
void usage() {
  std::cout << "usage: strata-bench [--help] [--device cpu|cuda:N] [--sizes LIST] [--threads N] [filter...]\n"
               "Runs the benchmarks whose name contains one of the filters (when none is given,\n"
               "all but those marked 'on request') and prints a table for each.\n"
               "  --device cuda:N  runs those marked (cuda) on GPU N instead (tokens/s and MFU\n"
               "                 against the GPU's bf16 peak); without a usable GPU it stops\n"
               "                 with \"no CUDA device\"\n"
               "  --sizes LIST   adamw: parameter counts, one at a time, e.g. 64M,256M\n"
               "                 (K/M/G are powers of 2; default 64M,128M,256M,512M,1G;\n"
               "                 1G needs 18 GiB of RAM)\n"
               "  --threads N    adamw: oneTBB threads (default 2)\n"
               "Benchmarks:\n";
  for (const auto& b : strata::bench::registry())
    std::cout << "  " << b.name << (b.cuda ? "  (cuda)" : "") << (b.on_request ? "  (on request)" : "") << "\n";
}

// "cpu" -> -1, "cuda:N" / "cuda" -> N (0); anything else is a usage error.
bool parse_device(const std::string& spec, int& index) {
  if (spec == "cpu") return index = -1, true;
  if (spec == "cuda") return index = 0, true;
  if (spec.rfind("cuda:", 0) != 0 || spec.size() == 5) return false;
  for (size_t i = 5; i < spec.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(spec[i]))) return false;
  index = std::stoi(spec.substr(5));
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> filters;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    }
    if (arg == "--device" || arg.rfind("--device=", 0) == 0) {
      std::string spec = arg == "--device" ? (i + 1 < argc ? argv[++i] : "") : arg.substr(9);
      if (!parse_device(spec, strata::bench::cuda_index())) {
        std::cerr << "strata-bench: --device '" << spec << "' is not cpu, cuda or cuda:N\n";
        return 2;
      }
      continue;
    }
    if (arg == "--sizes" || arg == "--threads") {
      if (i + 1 == argc) {
        std::cerr << "strata-bench: " << arg << " needs a value\n";
        return 2;
      }
      const std::string value = argv[++i];
      try {
        auto& o = strata::bench::mutable_options();
        if (arg == "--sizes") {
          strata::bench::parse_counts(value);  // bad input fails here, before any benchmark runs
          o.sizes = value;
        } else {
          const int64_t threads = strata::bench::parse_count(value);
          STRATA_CHECK(threads <= 4096, "--threads " << value << " is not a thread count");
          o.threads = int(threads);
        }
      } catch (const std::exception& e) {
        std::cerr << "strata-bench: " << arg << ": " << e.what() << "\n";
        return 2;
      }
      continue;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::cerr << "strata-bench: unknown option '" << arg << "'\n";
      usage();
      return 2;
    }
    filters.push_back(arg);
  }
  int ran = 0;
  try {
    for (const auto& b : strata::bench::registry()) {
      bool selected = filters.empty() && !b.on_request;
      for (const auto& f : filters) selected = selected || b.name.find(f) != std::string::npos;
      if (!selected || b.cuda != (strata::bench::cuda_index() >= 0)) continue;
      b.run();
      ++ran;
    }
  } catch (const std::exception& e) {
    std::cerr << "strata-bench: " << e.what() << "\n";
    return 1;
  }
  if (!ran) {
    std::cerr << "strata-bench: no " << (strata::bench::cuda_index() >= 0 ? "(cuda) " : "")
              << "benchmark name contains any of the filters given\n";
    usage();
    return 2;
  }
  if (strata::bench::cuda_index() >= 0) return 0;
  std::cout << "\n" << strata::num_threads()
            << " threads. GB/s counts the bytes an op must read + write; stores to memory not\n"
               "read first (memcpy's target, an out-of-place op's output) also cost a\n"
               "write-allocate read that is not counted, so in-place ops can beat memcpy.\n";
  return 0;
}
