// The CUDA emulator's sanitizer: bounds and race checks of shared memory, and the
// per-kernel bank-conflict statistics (see emu.h for what each reports).
// Races: every byte of a shared array has a shadow cell holding the interval it was
// last touched in, its writer and its reader(s) there, each with the count of
// __syncwarp()s its warp had passed. Two accesses of one interval are ordered only
// when they are lanes of one warp with a __syncwarp() between them.
// Banks: the k-th access of each lane since the warp's last barrier goes to slot k of
// the warp's instruction list; a barrier closes the list and scores each slot.
// Invariant: findings never stop a block (it runs to the end, as on the GPU under
// compute-sanitizer); they are collected in the launch and thrown after the grid.
#include "sanitize.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

namespace strata::emu {

namespace {

std::atomic<bool> g_races{[] {
  const char* v = std::getenv("STRATA_EMU_SANITIZE");
  return !(v && std::strcmp(v, "0") == 0);
}()};
// Checked accesses per kernel before its launches are checked for bounds only.
std::atomic<uint64_t> g_budget{[] {
  const char* v = std::getenv("STRATA_EMU_SANITIZE");
  if (v && std::strcmp(v, "0") == 0) return uint64_t(0);
  if (v && std::strcmp(v, "full") == 0) return ~uint64_t(0);
  return uint64_t(1) << 20;
}()};
std::atomic<uint64_t> g_seed{[] {
  const char* v = std::getenv("STRATA_EMU_SEED");
  return v ? std::strtoull(v, nullptr, 10) : uint64_t(1);
}()};

constexpr uint16_t kNone = 0xffff, kManyWarps = 0xfffe, kWarpReaders = 0x8000;
constexpr uint32_t kMaxInstructions = 1u << 14;  // per warp and interval; past it, accesses are dropped
constexpr size_t kMaxErrors = 4;

// A byte's shadow: who wrote and read it in interval `epoch`.
struct Cell {
  uint32_t epoch;
  uint16_t writer, writer_sync;  // thread, its warp's __syncwarp count then
  uint16_t reader, reader_sync;  // thread, kWarpReaders | warp, or kManyWarps; least sync
};

// The k-th access of each lane of a warp: addresses are bank-neutral (region id << 22
// plus the byte offset; every region starts at bank 0, as arrays are 128-aligned).
struct Instruction {
  uint32_t address[32];
  uint32_t mask = 0;
  uint32_t bytes = 0;  // widest access among the lanes
};

struct WarpBanks {
  std::vector<Instruction> slots;
  uint32_t used = 0;
};

struct State {
  sanitize::Launch* launch = nullptr;
  uint32_t epoch = 0;
  uint32_t next_region = 0;
  int thread = 0, threads = 0;
  uint16_t warp_sync[32] = {};
  uint32_t lane_slot[1024] = {};
  WarpBanks warps[32];
  sanitize::Counters counters;
  std::vector<Region*> regions;
  alignas(64) char sink[256];  // where out-of-bounds accesses go
};

thread_local State t_state;
// The launch's dynamic shared memory, as a region of this OS thread.
thread_local Region t_dynamic(nullptr, 0, "", 0);

std::string thread_text(int linear) {
  const unsigned x = blockDim.x, y = blockDim.y;
  std::ostringstream s;
  s << "(" << unsigned(linear) % x << "," << (unsigned(linear) / x) % y << "," << unsigned(linear) / (x * y) << ")";
  return s.str();
}

std::string where(const Region* r, size_t offset) {
  std::ostringstream s;
  s << "byte " << offset << " of ";
  if (r->line == 0)
    s << "dynamic shared memory (" << r->bytes << " bytes)";
  else
    s << "the shared array declared at " << r->file << ":" << r->line << " (" << r->bytes << " bytes)";
  return s.str();
}

void report(const std::string& what) {
  State& s = t_state;
  if (!s.launch) {
    std::fprintf(stderr, "strata CUDA emulator: %s\n", what.c_str());
    std::abort();
  }
  std::ostringstream m;
  m << what << ", in kernel " << sanitize::kernel_name(s.launch->kernel) << " block (" << blockIdx.x << ","
    << blockIdx.y << "," << blockIdx.z << ")";
  std::lock_guard lock(s.launch->mutex);
  if (s.launch->errors.size() < kMaxErrors) s.launch->errors.push_back(m.str());
  ++s.launch->error_count;
}

bool ordered(const State& s, uint16_t other, uint16_t other_sync, int t) {
  return (other >> 5) == (t >> 5) && s.warp_sync[t >> 5] > other_sync;
}

// Whether the reads recorded in c all happen before an access by thread t.
bool reads_ordered(const State& s, const Cell& c, int t) {
  if (c.reader == kNone || c.reader == t) return true;
  if (c.reader == kManyWarps) return false;
  if (c.reader & kWarpReaders) return (c.reader & 31) == (t >> 5) && s.warp_sync[t >> 5] > c.reader_sync;
  return ordered(s, c.reader, c.reader_sync, t);
}

void add_reader(Cell& c, int t, uint16_t sync) {
  if (c.reader == kNone) {
    c.reader = uint16_t(t), c.reader_sync = sync;
    return;
  }
  if (c.reader == t || c.reader == kManyWarps) return;
  const int warp = c.reader & kWarpReaders ? c.reader & 31 : c.reader >> 5;
  c.reader = warp == (t >> 5) ? uint16_t(kWarpReaders | warp) : kManyWarps;
  c.reader_sync = std::min(c.reader_sync, sync);
}

void report_race(const State& s, const Region* r, size_t offset, const Cell& c, bool write, bool after_write) {
  const int t = s.thread;
  std::string race;
  if (after_write)
    race = "thread " + thread_text(c.writer) + " wrote and thread " + thread_text(t) + (write ? " wrote " : " read ");
  else
    race = (c.reader & kWarpReaders ? std::string("several threads") : "thread " + thread_text(c.reader)) +
           " read and thread " + thread_text(t) + " wrote ";
  report("shared-memory race: " + race + where(r, offset) +
         " in one barrier interval (a __syncthreads() between them is missing)");
}

void check_race(State& s, Region* r, size_t offset, size_t bytes, bool write) {
  const int t = s.thread;
  const uint16_t sync = s.warp_sync[t >> 5];
  Cell* cells = static_cast<Cell*>(r->shadow) + offset;
  bool reported = false;
  for (size_t i = 0; i < bytes; ++i) {
    Cell& c = cells[i];
    if (c.epoch != s.epoch) {
      c = {s.epoch, kNone, 0, kNone, 0};
    } else if (!reported) {
      const bool after_write = c.writer != kNone && c.writer != t && !ordered(s, c.writer, c.writer_sync, t);
      if (after_write || (write && !reads_ordered(s, c, t))) {
        report_race(s, r, offset + i, c, write, after_write);
        reported = true;
      }
    }
    if (write)
      c.writer = uint16_t(t), c.writer_sync = sync;
    else
      add_reader(c, t, sync);
  }
}

void record_bank(State& s, const Region* r, size_t offset, size_t bytes) {
  const int t = s.thread, lane = t & 31;
  WarpBanks& w = s.warps[t >> 5];
  const uint32_t k = s.lane_slot[t]++;
  if (k >= kMaxInstructions) {
    ++s.counters.dropped;
    return;
  }
  if (k >= w.slots.size()) w.slots.resize(std::max<size_t>(k + 1, w.slots.size() * 2));
  Instruction& in = w.slots[k];
  in.address[lane] = (r->id << 22) + uint32_t(offset);
  in.mask |= 1u << lane;
  in.bytes = std::max(in.bytes, uint32_t(bytes));
  w.used = std::max(w.used, k + 1);
}

// The instruction's degree: per phase of 128 bytes, the most distinct words of a bank.
int degree(const Instruction& in) {
  const int per_phase = in.bytes <= 4 ? 32 : int(128 / std::min<uint32_t>(in.bytes, 16));
  int worst = 0;
  for (int p0 = 0; p0 < 32; p0 += per_phase) {
    uint32_t words[128];
    int n = 0;
    for (int l = p0; l < p0 + per_phase; ++l) {
      if (!(in.mask >> l & 1u)) continue;
      const uint32_t first = in.address[l] / 4, last = (in.address[l] + std::max(in.bytes, 1u) - 1) / 4;
      for (uint32_t w = first; w <= last && n < 128; ++w) words[n++] = w;
    }
    std::sort(words, words + n);
    n = int(std::unique(words, words + n) - words);
    int per_bank[32] = {};
    for (int i = 0; i < n; ++i) worst = std::max(worst, ++per_bank[words[i] % 32]);
  }
  return worst;
}

void flush_warp(State& s, int warp) {
  WarpBanks& w = s.warps[warp];
  for (uint32_t k = 0; k < w.used; ++k) {
    Instruction& in = w.slots[k];
    if (!in.mask) continue;
    const int d = degree(in);
    ++s.counters.instructions;
    s.counters.degree_sum += uint64_t(d);
    s.counters.worst = std::max(s.counters.worst, d);
    in.mask = 0, in.bytes = 0;
  }
  w.used = 0;
  for (int l = warp * 32; l < warp * 32 + 32 && l < s.threads; ++l) s.lane_slot[l] = 0;
}

void new_interval(State& s) {
  if (++s.epoch == 0) {  // wrapped: no cell may match a later interval by accident
    for (Region* r : s.regions) std::memset(r->shadow, 0, r->shadow_bytes);
    if (t_dynamic.shadow) std::memset(t_dynamic.shadow, 0, t_dynamic.shadow_bytes);
    s.epoch = 1;
  }
  std::memset(s.warp_sync, 0, sizeof s.warp_sync);
}

// Kernel statistics since reset_stats(), by kernel function.
struct KernelEntry {
  uint64_t launches = 0, checked_launches = 0;
  sanitize::Counters counters;
};
std::mutex g_stats_mutex;
std::map<const void*, KernelEntry> g_stats;

struct ReportAtExit {
  ~ReportAtExit() {
    const char* v = std::getenv("STRATA_EMU_REPORT");
    if (v && std::strcmp(v, "1") == 0) std::fprintf(stderr, "%s", conflict_report().c_str());
  }
} g_report_at_exit;

}  // namespace

// ---------------------------------------------------------------- regions
Region::Region(void* b, size_t n, const char* f, unsigned l) : file(f), line(l) {
  State& s = t_state;
  id = s.next_region++ & 1023u;
  if (line != 0) s.regions.push_back(this);  // line 0: the dynamic region, looked up apart
  resize(b, n);
}

Region::~Region() {
  State& s = t_state;
  s.regions.erase(std::remove(s.regions.begin(), s.regions.end(), this), s.regions.end());
  std::free(shadow);
}

void Region::resize(void* b, size_t n) {
  base = static_cast<char*>(b);
  bytes = n;
  if (n * sizeof(Cell) > shadow_bytes) {
    std::free(shadow);
    shadow_bytes = n * sizeof(Cell);
    shadow = std::calloc(n, sizeof(Cell));  // epoch 0 never matches a live interval
    if (!shadow) std::abort();
  }
}

void* record_slow(Region* r, void* p, size_t bytes, bool write) {
  State& s = t_state;
  const ptrdiff_t offset = static_cast<char*>(p) - r->base;
  if (offset < 0 || size_t(offset) + bytes > r->bytes) {
    std::ostringstream m;
    m << "out-of-bounds shared-memory " << (write ? "write" : "read") << ": thread " << thread_text(s.thread)
      << (write ? " wrote " : " read ") << bytes << " bytes at byte offset " << offset << " of "
      << (r->line == 0 ? "dynamic shared memory" : "the shared array declared at " + std::string(r->file) + ":" +
                                                          std::to_string(r->line))
      << " (" << r->bytes << " bytes)";
    report(m.str());
    if (bytes > sizeof s.sink) std::abort();
    return s.sink;
  }
  if (!s.launch || !t_checking) return p;
  ++s.counters.accesses;
  if (g_races.load(std::memory_order_relaxed)) check_race(s, r, size_t(offset), bytes, write);
  record_bank(s, r, size_t(offset), bytes);
  return p;
}

void record_shared_access(const void* addr, size_t bytes, bool write) {
  State& s = t_state;
  const char* a = static_cast<const char*>(addr);
  auto inside = [&](Region* r) { return a >= r->base && a + bytes <= r->base + r->bytes; };
  Region* r = inside(&t_dynamic) ? &t_dynamic : nullptr;
  for (size_t i = 0; !r && i < s.regions.size(); ++i)
    if (inside(s.regions[i])) r = s.regions[i];
  if (!r) {
    std::ostringstream m;
    m << "out-of-bounds shared-memory " << (write ? "write" : "read") << ": thread " << thread_text(s.thread)
      << " accessed " << bytes << " bytes at " << addr << ", in no shared array of the block";
    report(m.str());
    return;
  }
  record(r, const_cast<char*>(a), bytes, write);
}

Region* dynamic_shared_region() { return &t_dynamic; }

// ---------------------------------------------------------------- settings and stats
void set_race_check(bool on) { g_races = on; }
bool race_check() { return g_races; }
void set_check_budget(uint64_t accesses) { g_budget = accesses; }
uint64_t check_budget() { return g_budget; }
void set_thread_order_seed(uint64_t seed) { g_seed = seed; }
uint64_t thread_order_seed() { return g_seed; }

void reset_stats() {
  std::lock_guard lock(g_stats_mutex);
  g_stats.clear();
}

namespace {
KernelStats stats_of(const KernelEntry& e) {
  KernelStats k;
  k.launches = e.launches;
  k.checked_launches = e.checked_launches;
  k.shared_accesses = e.counters.accesses;
  k.instructions = e.counters.instructions;
  k.worst_degree = e.counters.worst;
  k.mean_degree = e.counters.instructions ? double(e.counters.degree_sum) / double(e.counters.instructions) : 0.0;
  return k;
}

// By name, with the instances of a template together under the name without <...>.
std::map<std::string, KernelEntry> stats_by_name(bool also_templates) {
  std::map<const void*, KernelEntry> copy;
  {
    std::lock_guard lock(g_stats_mutex);
    copy = g_stats;
  }
  std::map<std::string, KernelEntry> out;
  for (const auto& [kernel, e] : copy) {
    const std::string name = sanitize::kernel_name(kernel);
    std::vector<std::string> keys{name};
    if (also_templates && name.find('<') != std::string::npos) keys.push_back(name.substr(0, name.find('<')));
    for (const std::string& key : keys) {
      KernelEntry& o = out[key];
      o.launches += e.launches;
      o.checked_launches += e.checked_launches;
      o.counters.add(e.counters);
    }
  }
  return out;
}
}  // namespace

KernelStats kernel_stats(const std::string& name) {
  const auto all = stats_by_name(true);
  const auto it = all.find(name);
  return it == all.end() ? KernelStats{} : stats_of(it->second);
}

std::string conflict_report() {
  std::ostringstream s;
  char line[512];
  std::snprintf(line, sizeof line, "%-56s %9s %8s %13s %11s %6s %6s\n", "kernel (emulated shared-memory banks)",
                "launches", "checked", "accesses", "warp instr", "worst", "mean");
  s << line;
  for (const auto& [name, e] : stats_by_name(false)) {
    const KernelStats k = stats_of(e);
    std::snprintf(line, sizeof line, "%-56s %9llu %8llu %13llu %11llu %6d %6.2f\n", name.c_str(),
                  (unsigned long long)k.launches, (unsigned long long)k.checked_launches,
                  (unsigned long long)k.shared_accesses,
                  (unsigned long long)k.instructions, k.worst_degree, k.mean_degree);
    s << line;
  }
  return s.str();
}

// ---------------------------------------------------------------- scheduler hooks
namespace sanitize {

void Counters::add(const Counters& o) {
  accesses += o.accesses, instructions += o.instructions, degree_sum += o.degree_sum, dropped += o.dropped;
  worst = std::max(worst, o.worst);
}

void launch_begin(Launch& launch) {
  std::lock_guard lock(g_stats_mutex);
  launch.checked = g_stats[launch.kernel].counters.accesses < g_budget.load();
}

void range_begin(Launch* launch, void* dynamic_shared, size_t dynamic_bytes) {
  State& s = t_state;
  s.launch = launch;
  t_checking = launch->checked;
  s.counters = {};
  t_dynamic.resize(dynamic_shared, dynamic_bytes);
}

void range_end() {
  State& s = t_state;
  {
    std::lock_guard lock(s.launch->mutex);
    s.launch->counters.add(s.counters);
  }
  s.launch = nullptr;
  t_checking = false;
}

void block_begin(int threads) {
  State& s = t_state;
  s.threads = threads;
  new_interval(s);
}

void set_thread(int linear) { t_state.thread = linear; }

void block_barrier() {
  State& s = t_state;
  for (int w = 0; w * 32 < s.threads; ++w) flush_warp(s, w);
  new_interval(s);
}

void warp_barrier(int warp, bool fence) {
  State& s = t_state;
  flush_warp(s, warp);
  if (fence) ++s.warp_sync[warp];
}

void block_end() {
  State& s = t_state;
  for (int w = 0; w * 32 < s.threads; ++w) flush_warp(s, w);
}

void launch_end(Launch& launch) {
  {
    std::lock_guard lock(g_stats_mutex);
    KernelEntry& e = g_stats[launch.kernel];
    ++e.launches;
    e.checked_launches += launch.checked;
    e.counters.add(launch.counters);
  }
  if (launch.error_count == 0) return;
  std::ostringstream m;
  m << "strata CUDA emulator: " << launch.error_count << " shared-memory finding(s)";
  for (const std::string& e : launch.errors) m << "\n  " << e;
  if (launch.error_count > launch.errors.size()) m << "\n  ... and " << launch.error_count - launch.errors.size() << " more";
  throw SanitizerError(m.str());
}

}  // namespace sanitize

}  // namespace strata::emu
