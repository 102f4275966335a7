// Streams and events (strata/device.h): CPU worker queues, their ordering fuzz, and
// the CUDA streams and events behind the same interface (kernels/cuda/runtime.h).
// Invariant: a worker runs its items one at a time in enqueue order; an Event's
// completed generation only grows, and a wait captures the generation recorded at
// the time of the wait (CUDA's semantics), so a later record never delays it.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "cuda/runtime.h"
#include "lib/core/clock.h"
#include "lib/core/stream_timeline.h"
#include "strata/device.h"
#include "strata/error.h"

namespace strata {

namespace {
// The environment's seed; a value that is not a decimal integer is refused by name
// (the first worker stream throws it, so a typo never runs the suite unfuzzed).
uint64_t fuzz_seed_from_environment() {
  const char* v = std::getenv("STRATA_STREAM_FUZZ");
  if (!v || !*v) return 0;
  char* end = nullptr;
  errno = 0;
  const unsigned long long seed = std::strtoull(v, &end, 10);
  STRATA_CHECK(*v >= '0' && *v <= '9' && *end == '\0' && errno == 0,
               "STRATA_STREAM_FUZZ=" << v
                                     << ": not a non-negative decimal integer; give a seed (e.g. "
                                        "STRATA_STREAM_FUZZ=1), 0 or nothing to turn the ordering fuzz off");
  return seed;
}

std::atomic<uint64_t>& fuzz_seed() {  // a throwing initialiser runs again at the next call
  static std::atomic<uint64_t> seed{fuzz_seed_from_environment()};
  return seed;
}

// An item's delay under the fuzz: 0 to kFuzzMaxMicros, drawn from the seed, the stream
// and the item's index. Short, so the bitwise suites run under several seeds in CI.
constexpr uint64_t kFuzzMaxMicros = 500;

uint64_t mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::atomic<bool> g_timeline_on{false};
std::mutex g_timeline_mutex;
std::vector<StreamInterval> g_timeline;

void record_interval(const StreamInterval& interval) {
  std::lock_guard lock(g_timeline_mutex);
  g_timeline.push_back(interval);
}
}  // namespace

void set_stream_timeline(bool on) { g_timeline_on.store(on, std::memory_order_relaxed); }
std::vector<StreamInterval> take_stream_timeline() {
  std::lock_guard lock(g_timeline_mutex);
  return std::exchange(g_timeline, {});
}

void set_stream_fuzz(uint64_t seed) { fuzz_seed().store(seed); }
uint64_t stream_fuzz() { return fuzz_seed().load(); }

const char* stream_role_name(StreamRole role) {
  switch (role) {
    case StreamRole::compute: return "compute";
    case StreamRole::host_to_device: return "host_to_device";
    case StreamRole::device_to_host: return "device_to_host";
    case StreamRole::communication: return "communication";
  }
  return "?";
}

// One thread draining a FIFO of items.
struct Stream::Worker {
  std::mutex mutex;
  std::condition_variable cv;
  struct Item {
    std::function<void()> fn;
    bool fuzzed;  // false for an event's own markers: delaying them reorders nothing new
  };
  std::deque<Item> items;
  bool running = false, stopping = false;
  std::exception_ptr error;  // the first item's error, until synchronize() rethrows it
  uint64_t salt = 0, count = 0;
  StreamInterval where;  // device and role, for the timeline
  std::thread thread;

  Worker(uint64_t salt_, const StreamInterval& where_) : salt(salt_), where(where_), thread([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    cv.notify_all();
    thread.join();
  }
  void loop() {
    std::unique_lock lock(mutex);
    for (;;) {
      cv.wait(lock, [&] { return stopping || !items.empty(); });
      if (items.empty()) return;  // stopping, drained
      Item item = std::move(items.front());
      items.pop_front();
      running = true;
      const uint64_t index = count++;
      lock.unlock();
      if (const uint64_t seed = stream_fuzz(); seed && item.fuzzed)
        std::this_thread::sleep_for(
            std::chrono::microseconds(mix(seed ^ mix(salt ^ mix(index))) % (kFuzzMaxMicros + 1)));
      const bool timed = g_timeline_on.load(std::memory_order_relaxed);
      const double begin = timed ? now_seconds() : 0;
      try {
        item.fn();
      } catch (...) {
        std::lock_guard relock(mutex);
        if (!error) error = std::current_exception();
      }
      if (timed) {
        StreamInterval interval = where;
        interval.item = index;
        interval.marker = !item.fuzzed;
        interval.begin = begin;
        interval.end = now_seconds();
        record_interval(interval);
      }
      lock.lock();
      running = false;
      cv.notify_all();
    }
  }
  void drain() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return items.empty() && !running; });
  }
};

Stream::Stream(Device& device, StreamRole role, void* native) : device_(&device), role_(role), native_(native) {
  if (device.kind() == DeviceKind::cpu && role != StreamRole::compute) {
    stream_fuzz();  // refuses a malformed STRATA_STREAM_FUZZ before any item runs
    StreamInterval where;
    where.device_kind = device.kind();
    where.device = device.index();
    where.role = role;
    worker_ = std::make_unique<Worker>(uint64_t(device.index()) << 8 | uint64_t(role), where);
  }
}

Stream::~Stream() {
  if (worker_) {
    worker_->drain();
    STRATA_CHECK_PRINT(!worker_->error, std::string("a ") + stream_role_name(role_) +
                                            " stream item failed and nobody synchronized the stream");
  }
}

namespace {
// Set by Event::record / wait around their host_function call: their markers are not
// delayed by the fuzz (delaying them reorders nothing a delayed copy does not).
thread_local bool t_event_marker = false;
void enqueue_marker(Stream& stream, std::function<void()> fn) {
  t_event_marker = true;
  try {
    stream.host_function(std::move(fn));
  } catch (...) {
    t_event_marker = false;
    throw;
  }
  t_event_marker = false;
}
}  // namespace

void Stream::host_function(std::function<void()> fn) {
  const bool fuzzed = !t_event_marker;
  if (device_->kind() == DeviceKind::cuda) {
    cuda_runtime::launch_host_function(native_, std::move(fn));
    return;
  }
  if (!worker_) {
    fn();
    return;
  }
  {
    std::lock_guard lock(worker_->mutex);
    worker_->items.push_back({std::move(fn), fuzzed});
  }
  worker_->cv.notify_all();
}

void Stream::synchronize() {
  if (native_) cuda_runtime::synchronize(native_);
  if (!worker_) return;
  worker_->drain();
  std::exception_ptr e;
  {
    std::lock_guard lock(worker_->mutex);
    std::swap(e, worker_->error);
  }
  if (e) std::rethrow_exception(e);
}

void Stream::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  if (device_->kind() == DeviceKind::cuda)
    cuda_runtime::copy_async(dst, src, bytes, native_);
  else
    host_function([dst, src, bytes] { std::memcpy(dst, src, bytes); });
}

// A CPU event: generations recorded and completed, and when the latest completed.
struct Event::State {
  std::mutex mutex;
  std::condition_variable cv;
  uint64_t recorded = 0, completed = 0;
  double completed_at = 0;

  void complete(uint64_t generation) {
    {
      std::lock_guard lock(mutex);
      if (generation <= completed) return;
      completed = generation;
      completed_at = now_seconds();
    }
    cv.notify_all();
  }
  void wait_for(uint64_t generation) {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return completed >= generation; });
  }
};

Event::Event(Device& device) : device_(&device) {
  if (device.kind() == DeviceKind::cuda)
    native_ = cuda_runtime::timing_event_create(device.index());
  else
    state_ = std::make_shared<State>();
}

Event::~Event() {
  if (native_) cuda_runtime::event_destroy(native_);
}

namespace {
void check_same_device(const Device& event, const Stream& stream, const char* what) {
  STRATA_CHECK(&stream.device() == &event,
               "Event::" << what << ": the event belongs to " << event.name() << " but the stream to "
                         << stream.device().name() << "; make an Event for each device");
}
}  // namespace

void Event::record(Stream& stream) {
  check_same_device(*device_, stream, "record");
  if (native_) {
    cuda_runtime::event_record(native_, stream.native());
    return;
  }
  uint64_t generation;
  {
    std::lock_guard lock(state_->mutex);
    generation = ++state_->recorded;
  }
  enqueue_marker(stream, [state = state_, generation] { state->complete(generation); });
}

void Event::wait(Stream& stream) {
  check_same_device(*device_, stream, "wait");
  if (native_) {
    cuda_runtime::stream_wait(stream.native(), native_);
    return;
  }
  uint64_t generation;
  {
    std::lock_guard lock(state_->mutex);
    generation = state_->recorded;
    if (state_->completed >= generation) return;
  }
  enqueue_marker(stream, [state = state_, generation] { state->wait_for(generation); });
}

bool Event::query() const {
  if (native_) return cuda_runtime::event_query(native_);
  std::lock_guard lock(state_->mutex);
  return state_->completed >= state_->recorded;
}

void Event::synchronize() {
  if (native_) {
    cuda_runtime::event_synchronize(native_);
    return;
  }
  uint64_t generation;
  {
    std::lock_guard lock(state_->mutex);
    generation = state_->recorded;
  }
  state_->wait_for(generation);
}

double Event::completed_at() {
  STRATA_CHECK(!native_, "Event::completed_at: " << device_->name()
                                                  << " is a CUDA device, whose events have no host timestamp; use "
                                                     "elapsed_ms between two events");
  synchronize();
  std::lock_guard lock(state_->mutex);
  STRATA_CHECK(state_->recorded > 0, "Event::completed_at: the event was never recorded; record it on a stream first");
  return state_->completed_at;
}

float Event::elapsed_ms(Event& later) {
  STRATA_CHECK(later.device_ == device_, "Event::elapsed_ms: the events belong to " << device_->name() << " and "
                                                                                    << later.device_->name()
                                                                                    << "; compare events of one device");
  if (native_) return cuda_runtime::event_elapsed_ms(native_, later.native_);
  return float((later.completed_at() - completed_at()) * 1e3);
}

}  // namespace strata
