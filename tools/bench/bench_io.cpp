// strata-bench io: sequential NVMe read and write GB/s of the NvmeStore beside fio
// (io_uring engine, O_DIRECT, same file, block size and queue depth), interleaved
// strata/fio/fio/strata so drift between runs cancels, and the ratio strata / fio.
//   STRATA_BENCH_IO_DIR    directory for the test file (default /var/tmp)
//   STRATA_BENCH_IO_SIZE   file size, e.g. 4G, 512M (default 4G)
//   STRATA_BENCH_IO_QUICK  1: 256M and only 1 MiB / qd 32
//   STRATA_BENCH_IO_ROUNDS rounds per setting (default 2)
//   STRATA_BENCH_IO_VERBOSE 1: print every pass
//   STRATA_BENCH_IO_SETTINGS BLOCK:QD list, e.g. 1M:32,8M:64 (default: a sweep)
//   STRATA_BENCH_IO_SMALL_PAGES 1: pinned buffers in 4 KiB pages, like fio's default
// fio runs twice per setting: with its default buffers (malloc, 4 KiB pages) and
// with --iomem=mmaphuge (2 MiB HugePages, like the store's pool, whose huge pages
// are most of its lead over default fio on virtio disks). The huge-page ratio is the
// fair one. HugePages are reserved through /proc/sys/vm/nr_hugepages for the run and
// released after, which needs root; without root the huge-page column runs only when
// enough are already free, and says so otherwise.
// Invariant: nothing is asserted; the file is written once before any read is timed
// (reads of fallocated, never-written blocks would not touch the drive).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <string>
#include <fstream>
#include <unistd.h>

#include "bench.h"
#include "strata/error.h"
#include "strata/offload.h"

namespace strata::bench {
namespace {

using offload::NvmeStore;
using offload::PinnedBuffer;
using offload::PinnedPool;

uint64_t parse_size(const char* text, uint64_t fallback) {
  return text && *text ? uint64_t(parse_count(text)) : fallback;
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// qd lanes, each with its own buffer; a lane's completion submits its next block,
// so the store always has qd transfers to work on. Returns seconds.
double strata_pass(NvmeStore& store, uint32_t object, uint64_t size, size_t block, std::vector<PinnedBuffer>& buffers,
                   bool write) {
  std::mutex mutex;
  std::condition_variable idle;
  int lanes_running = int(buffers.size());
  std::exception_ptr error;
  uint64_t next = 0;  // under mutex
  std::function<void(size_t)> issue = [&](size_t lane) {
    uint64_t offset;
    {
      std::lock_guard lock(mutex);
      offset = next;
      next += block;
      if (offset >= size || error) {
        if (--lanes_running == 0) idle.notify_all();
        return;
      }
    }
    auto done = [&, lane](std::exception_ptr e) {
      if (e) {
        std::lock_guard lock(mutex);
        if (!error) error = e;
      }
      issue(lane);
    };
    void* buffer = buffers[lane].data();
    size_t bytes = size_t(std::min<uint64_t>(block, size - offset));
    if (write)
      store.write(object, offset, buffer, bytes, done);
    else
      store.read(object, offset, buffer, bytes, done);
  };
  auto t0 = std::chrono::steady_clock::now();
  for (size_t lane = 0; lane < buffers.size(); ++lane) issue(lane);
  std::unique_lock lock(mutex);
  idle.wait(lock, [&] { return lanes_running == 0; });
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (error) std::rethrow_exception(error);
  return seconds;
}

}  // namespace

double fio_pass(const std::string& file, uint64_t size, size_t block, int qd, bool write, bool huge_pages) {
  std::string cmd = "fio --name=strata-bench --filename=" + file + " --rw=" + (write ? "write" : "read") +
                    " --bs=" + std::to_string(block) + " --iodepth=" + std::to_string(qd) +
                    " --ioengine=io_uring --direct=1 --size=" + std::to_string(size) +
                    (huge_pages ? " --iomem=mmaphuge" : "") + " --numjobs=1 --output-format=json 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return -1;
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  if (pclose(pipe) != 0) return -1;
  size_t at = out.find(std::string("\"") + (write ? "write" : "read") + "\" : {");
  if (at == std::string::npos) return -1;
  at = out.find("\"bw_bytes\" : ", at);
  if (at == std::string::npos) return -1;
  return std::strtod(out.c_str() + at + 13, nullptr);
}

namespace {

// HugePages for fio's --iomem=mmaphuge: reserves `pages` more 2 MiB pages through
// /proc/sys/vm/nr_hugepages when root and gives them back on destruction. ok() says
// whether that many are free; why() says what stood in the way.
class HugePageReservation {
 public:
  explicit HugePageReservation(int64_t pages) {
    const int64_t free_now = meminfo("HugePages_Free:");
    if (free_now >= pages) {
      ok_ = true;  // someone reserved them already: use them, leave the setting alone
      return;
    }
    if (::geteuid() != 0) {
      why_ = "not root: cannot reserve " + std::to_string(pages) + " HugePages (" + std::to_string(free_now) +
             " free); as root run  echo " + std::to_string(pages) + " > /proc/sys/vm/nr_hugepages";
      return;
    }
    before_ = read_nr();
    write_nr(before_ + pages - free_now);
    changed_ = true;
    ok_ = meminfo("HugePages_Free:") >= pages;
    if (!ok_)
      why_ = "the kernel gave only " + std::to_string(meminfo("HugePages_Free:")) + " of " + std::to_string(pages) +
             " HugePages asked for (memory too fragmented)";
  }
  ~HugePageReservation() {
    if (changed_) write_nr(before_);
  }
  bool ok() const { return ok_; }
  bool changed() const { return changed_; }
  const std::string& why() const { return why_; }

 private:
  static int64_t meminfo(const std::string& key) {
    std::ifstream in("/proc/meminfo");
    for (std::string k; in >> k;) {
      int64_t v = 0;
      in >> v;
      if (k == key) return v;
      in.ignore(1 << 10, '\n');
    }
    return 0;
  }
  static int64_t read_nr() {
    std::ifstream in("/proc/sys/vm/nr_hugepages");
    int64_t v = 0;
    in >> v;
    return v;
  }
  static void write_nr(int64_t v) {
    std::ofstream out("/proc/sys/vm/nr_hugepages");
    out << v << "\n";
  }
  int64_t before_ = 0;
  bool changed_ = false, ok_ = false;
  std::string why_;
};

std::string size_label(size_t bytes) {
  return bytes >= (1 << 20) ? std::to_string(bytes >> 20) + " MiB" : std::to_string(bytes >> 10) + " KiB";
}

std::string gbps(double bytes_per_second) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", bytes_per_second / 1e9);
  return buf;
}

void bench_io() {
  const bool quick = env_or("STRATA_BENCH_IO_QUICK", "0") == "1";
  const std::string dir = env_or("STRATA_BENCH_IO_DIR", "/var/tmp");
  const uint64_t size = parse_size(std::getenv("STRATA_BENCH_IO_SIZE"), quick ? 256ull << 20 : 4ull << 30) /
                        (8 << 20) * (8 << 20);
  const bool verbose = env_or("STRATA_BENCH_IO_VERBOSE", "0") == "1";
  const int rounds = std::max(1, std::atoi(env_or("STRATA_BENCH_IO_ROUNDS", "2").c_str()));
  std::vector<std::pair<size_t, int>> settings;  // (block, queue depth)
  if (const char* list = std::getenv("STRATA_BENCH_IO_SETTINGS")) {
    for (std::string rest = list; !rest.empty();) {
      size_t comma = rest.find(','), colon = rest.find(':');
      std::string item = rest.substr(0, comma);
      STRATA_CHECK(colon != std::string::npos && colon < item.size(),
                   "STRATA_BENCH_IO_SETTINGS: expected BLOCK:QD[,BLOCK:QD...], e.g. 1M:32,8M:64; got '" << list << "'");
      settings.push_back({size_t(parse_size(item.substr(0, colon).c_str(), 0)), std::atoi(item.c_str() + colon + 1)});
      rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    }
  } else if (quick) {
    settings = {{1 << 20, 32}};
  } else {
    settings = {{1 << 20, 32}};
    for (size_t block : {size_t(128) << 10, size_t(1) << 20, size_t(8) << 20})
      for (int qd : {4, 16, 64}) settings.push_back({block, qd});
  }
  size_t pool_bytes = 0, max_block = 0;
  for (auto [block, qd] : settings) {
    pool_bytes = std::max(pool_bytes, block * size_t(qd));
    max_block = std::max(max_block, block);
  }
  const bool small_pages = env_or("STRATA_BENCH_IO_SMALL_PAGES", "0") == "1";
  PinnedPool pool(pool_bytes, "io bench buffers", !small_pages);
  offload::NvmeOptions options;
  options.paths = {dir};
  options.block_bytes = max_block;
  options.extent_bytes = size_t(64) << 20;  // a multiple of every block size: no split transfers
  options.queue_depth = 64;
  options.keep_files = true;  // fio opens it by name
  options.pinned = &pool;
  NvmeStore store(options);
  struct Remove {
    std::string file;
    ~Remove() { ::unlink(file.c_str()); }
  } remove{store.files()[0]};
  const uint32_t object = store.reserve("bench file", size);
  std::cout << "\nio: " << size_label(size) << " file " << store.files()[0] << ", store backend "
            << store.backend_name() << (store.direct() ? " (O_DIRECT" : " (buffered")
            << (store.buffers_registered() ? ", registered buffers" : "")
            << (small_pages ? ", 4 KiB pages)" : ", huge pages)") << "\n";
  {
    auto buffers = std::vector<PinnedBuffer>();
    for (int i = 0; i < 8; ++i) buffers.push_back(pool.allocate(max_block));
    for (auto& b : buffers) std::memset(b.data(), 0x5a, b.capacity());
    strata_pass(store, object, size, max_block, buffers, true);  // every block written once
  }
  const bool have_fio = fio_pass(store.files()[0], 1 << 20, 1 << 20, 1, false) > 0;
  if (!have_fio) std::cout << "io: fio not found or failing (apt install fio): strata numbers only\n";
  // fio's buffers: block x qd, plus its alignment slack; 2 MiB pages.
  const int64_t huge_pages = int64_t(pool_bytes >> 21) + 8;
  HugePageReservation reservation(have_fio ? huge_pages : 0);
  bool have_huge = have_fio && reservation.ok();
  if (have_huge && !(fio_pass(store.files()[0], 1 << 20, 1 << 20, 1, false, true) > 0)) {
    have_huge = false;
    std::cout << "io: fio --iomem=mmaphuge failed with " << huge_pages << " HugePages free: huge-page column skipped\n";
  } else if (have_fio && !have_huge) {
    std::cout << "io: fio with huge pages skipped: " << reservation.why() << "\n";
  } else if (reservation.changed()) {
    std::cout << "io: reserved " << huge_pages << " HugePages (2 MiB) for fio --iomem=mmaphuge; released after\n";
  }

  Table table({"op", "block", "qd", "strata GB/s", "fio 4K GB/s", "strata/fio 4K", "fio huge GB/s",
               "strata/fio huge"});
  for (auto [block, qd] : settings) {
    std::vector<PinnedBuffer> buffers;
    for (int i = 0; i < qd; ++i) {
      buffers.push_back(pool.allocate(block));
      std::memset(buffers.back().data(), 0x3c, block);
    }
    for (bool write : {false, true}) {
      double strata_sum = 0, fio_sum = 0, huge_sum = 0;
      for (int r = 0; r < rounds; ++r) {
        // Alternate which goes first so drift (caches, the drive's own state) cancels.
        auto ours = [&] {
          double bw = double(size) / strata_pass(store, object, size, block, buffers, write);
          if (verbose) std::cout << "  strata " << (write ? "write" : "read") << " " << gbps(bw) << " GB/s\n";
          strata_sum += bw;
        };
        auto theirs = [&] {
          if (!have_fio) return;
          double bw = fio_pass(store.files()[0], size, block, qd, write);
          if (verbose) std::cout << "  fio    " << (write ? "write" : "read") << " " << gbps(bw) << " GB/s\n";
          fio_sum += bw;
          if (!have_huge) return;
          bw = fio_pass(store.files()[0], size, block, qd, write, true);
          if (verbose) std::cout << "  fio huge " << (write ? "write" : "read") << " " << gbps(bw) << " GB/s\n";
          huge_sum += bw;
        };
        if (r % 2 == 0) {
          ours();
          theirs();
        } else {
          theirs();
          ours();
        }
      }
      const double ours = strata_sum / rounds, theirs = fio_sum / rounds, huge = huge_sum / rounds;
      table.row({write ? "write" : "read", size_label(block), std::to_string(qd), gbps(ours),
                 have_fio ? gbps(theirs) : "-", have_fio ? format_ratio(ours / theirs) : "-",
                 have_huge ? gbps(huge) : "-", have_huge ? format_ratio(ours / huge) : "-"});
      for (auto [label, value] : {std::pair{"fio", theirs}, std::pair{"fio_huge", huge}})
        if (value > 0)
          std::printf("RESULT io_%s_%zuK_qd%d_vs_%s %.3f\n", write ? "write" : "read", block >> 10, qd, label,
                      ours / value);
    }
  }
  table.print("io: sequential NVMe bandwidth, strata vs fio (io_uring, O_DIRECT, same file; fio's buffers in 4 KiB "
              "pages and in HugePages), mean of " + std::to_string(rounds) + " interleaved rounds");
  if (have_fio && !have_huge) std::cout << "(fio with huge pages not run: see above)\n";
}

}  // namespace

STRATA_BENCH("io", bench_io);

}  // namespace strata::bench
