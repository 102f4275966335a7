// The CUDA emulator's runtime: grid launch on oneTBB, one block per OS thread at a
// time, the threads of a block as fibers (a hand-written switch on x86-64, ucontext
// elsewhere) with barrier-aware scheduling.
// Invariant: a fiber waiting at a barrier is resumed only once every live thread it
// waits for (the block, or its warp) has arrived, so a kernel that would be wrong
// without a real barrier is wrong here too. Between barriers the ready threads run
// in the seeded order of emu.h, and the sanitizer (sanitize.h) hears of every thread
// switch and completed barrier. See emu.h for the design and its limits.
#include "emu.h"

#include <sys/mman.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "sanitize.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define STRATA_EMU_ASAN 1
#endif

// x86-64: fibers switch with the few instructions below instead of swapcontext, which
// also saves and restores the signal mask (a system call per switch, 80% of an
// emulated training step). Other architectures keep ucontext.
#if defined(__x86_64__)
#define STRATA_EMU_FAST_SWITCH 1
// Saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores its pointer in *save_sp, and resumes the context saved at load_sp.
extern "C" void strata_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .type strata_emu_switch, @function
strata_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size strata_emu_switch, .-strata_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

namespace strata::emu {

namespace {

constexpr size_t kStackBytes = size_t(256) << 10;  // lazily committed by mmap
constexpr int kMaxThreads = 1024;

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "strata CUDA emulator: %s (block %u,%u,%u thread %u,%u,%u)\n", what, blockIdx.x,
               blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  std::abort();
}

enum class Wait : uint8_t { none, warp, block, done };

struct Fiber {
  ucontext_t context;
  void* sp = nullptr;  // the saved stack pointer (fast switch)
  char* stack = nullptr;
  uint3 index{};
  Wait wait = Wait::none;
  uint32_t exchanges = 0;  // shuffles / votes so far: picks the exchange buffer
  void* asan_fake_stack = nullptr;
};

// One OS thread's block in flight. Reused from block to block and launch to launch.
struct Block {
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  void* scheduler_sp = nullptr;  // fast switch
  int current = -1;  // index of the running fiber, -1 outside fiber mode
  bool plain = false;  // threads run as a plain loop: no barrier may be reached
  int first = 0;       // the thread run first, alone: whether it syncs decides the mode
  bool first_synced = false;
  int live = 0, block_waiting = 0;
  int warp_live[kMaxThreads / 32] = {}, warp_waiting[kMaxThreads / 32] = {};
  bool warp_fence[kMaxThreads / 32] = {};  // the warp waits at a __syncwarp (not a shuffle)
  std::vector<int> order;  // the threads in this round's order
  uint64_t random = 0;     // the block's order generator (0: thread order)
  uint64_t exchange[2][kMaxThreads] = {};  // (2, threads): double-buffered by exchange count
  std::vector<std::max_align_t> shared;    // dynamic shared memory
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
};

thread_local Block t_block;

uint3 unlinear(unsigned t, const dim3& d) { return {t % d.x, (t / d.x) % d.y, t / (d.x * d.y)}; }

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A uniform draw in [0, n).
uint32_t draw(Block& b, uint32_t n) { return uint32_t((splitmix(b.random) >> 32) * n >> 32); }

// b.order = threads 0..n-1, shuffled when the block has a generator (once per block).
void draw_order(Block& b, int threads) {
  b.order.resize(size_t(threads));
  std::iota(b.order.begin(), b.order.end(), 0);
  if (b.random == 0) return;
  for (int i = threads - 1; i > 0; --i) std::swap(b.order[size_t(i)], b.order[draw(b, uint32_t(i + 1))]);
}

char* new_stack() {
  void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fatal("cannot map a fiber stack");
  mprotect(p, 4096, PROT_NONE);  // guard page: an overflow faults instead of corrupting
  return static_cast<char*>(p);
}

// Stack switches, annotated for AddressSanitizer so it tracks the fiber stacks.
// The bare switches: the hand-written one on x86-64, ucontext elsewhere.
void switch_to_fiber(Block& b, Fiber& f) {
#if STRATA_EMU_FAST_SWITCH
  strata_emu_switch(&b.scheduler_sp, f.sp);
#else
  swapcontext(&b.scheduler, &f.context);
#endif
}
void switch_to_scheduler(Block& b, Fiber& f) {
#if STRATA_EMU_FAST_SWITCH
  strata_emu_switch(&f.sp, b.scheduler_sp);
#else
  swapcontext(&f.context, &b.scheduler);
#endif
}

void enter_fiber(Block& b, Fiber& f) {
#if STRATA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
  switch_to_fiber(b, f);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  switch_to_fiber(b, f);
#endif
}

void leave_fiber(Block& b, Fiber& f, bool exiting) {
#if STRATA_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.asan_fake_stack, b.scheduler_stack,
                                 b.scheduler_stack_size);
  switch_to_scheduler(b, f);
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &b.scheduler_stack, &b.scheduler_stack_size);
#else
  (void)exiting;
  switch_to_scheduler(b, f);
#endif
}

void fiber_main() {
  Block& b = t_block;
  Fiber& f = b.fibers[size_t(b.current)];
#if STRATA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.scheduler_stack, &b.scheduler_stack_size);
#endif
  b.body(b.ctx);
  f.wait = Wait::done;
  leave_fiber(b, f, true);
}

#if STRATA_EMU_FAST_SWITCH
// Where a new fiber's first switch returns to; fiber_main never returns.
[[noreturn]] void fiber_entry() {
  fiber_main();
  std::abort();
}
#endif

void start_fiber(Block& b, int t) {
  Fiber& f = b.fibers[size_t(t)];
  if (!f.stack) f.stack = new_stack();
  f.index = unlinear(unsigned(t), blockDim);
  f.wait = Wait::none;
  f.exchanges = 0;
#if STRATA_EMU_FAST_SWITCH
  // The frame strata_emu_switch pops (top down): a null return address for
  // fiber_entry (so it starts with the stack aligned as after a call), fiber_entry as
  // the address `ret` jumps to, six callee-saved registers, then MXCSR and the x87
  // control word, copied from this thread.
  auto* top = reinterpret_cast<uint64_t*>(f.stack + kStackBytes);
  top[-1] = 0;
  top[-2] = reinterpret_cast<uint64_t>(&fiber_entry);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;
  uint32_t control[2] = {0, 0};
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  std::memcpy(&top[-9], control, 8);
  f.sp = &top[-9];
  (void)b;
  return;
#endif
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_main, 0);
}

void resume(Block& b, int t) {
  Fiber& f = b.fibers[size_t(t)];
  b.current = t;
  threadIdx = f.index;
  sanitize::set_thread(t);
  enter_fiber(b, f);
  b.current = -1;
  if (f.wait == Wait::done) {
    --b.live;
    --b.warp_live[t / 32];
  }
}

// Runs fibers whose barrier is complete until all are done.
void schedule(Block& b, int threads) {
  while (b.live > 0) {
    bool progressed = false;
    // The block's order, from a point drawn for each round.
    const int start = b.random ? int(draw(b, uint32_t(threads))) : 0;
    for (int i = 0; i < threads; ++i) {
      const int t = b.order[size_t((start + i) % threads)];
      if (b.fibers[size_t(t)].wait == Wait::none) {
        resume(b, t);
        progressed = true;
      }
    }
    for (int w = 0; w * 32 < threads; ++w) {
      if (b.warp_waiting[w] == 0 || b.warp_waiting[w] != b.warp_live[w]) continue;
      for (int t = w * 32; t < threads && t < (w + 1) * 32; ++t)
        if (b.fibers[size_t(t)].wait == Wait::warp) b.fibers[size_t(t)].wait = Wait::none;
      b.warp_waiting[w] = 0;
      sanitize::warp_barrier(w, b.warp_fence[w]);
      b.warp_fence[w] = false;
      progressed = true;
    }
    if (b.block_waiting > 0 && b.block_waiting == b.live) {
      for (int t = 0; t < threads; ++t)
        if (b.fibers[size_t(t)].wait == Wait::block) b.fibers[size_t(t)].wait = Wait::none;
      b.block_waiting = 0;
      sanitize::block_barrier();
      progressed = true;
    }
    if (!progressed) fatal("deadlock: threads of one block wait at different barriers");
  }
}

void run_block(int threads) {
  Block& b = t_block;
  if (!b.shared.empty()) std::memset(b.shared.data(), 0xff, b.shared.size() * sizeof(std::max_align_t));
  b.live = threads;
  b.block_waiting = 0;
  for (int w = 0; w * 32 < threads; ++w) {
    b.warp_live[w] = std::min(32, threads - w * 32);
    b.warp_waiting[w] = 0;
    b.warp_fence[w] = false;
  }
  const uint64_t seed = thread_order_seed();
  b.random = seed == 0 ? 0 : (seed ^ (uint64_t(blockIdx.x) << 42 ^ uint64_t(blockIdx.y) << 21 ^ blockIdx.z)) | 1;
  draw_order(b, threads);
  sanitize::block_begin(threads);
  b.plain = false;
  b.first = b.order[0];
  b.first_synced = false;
  start_fiber(b, b.first);
  resume(b, b.first);
  if (!b.first_synced) {
    // The first thread met no barrier, so no thread may: run the rest as a plain loop.
    b.plain = true;
    for (int t : b.order) {
      if (t == b.first) continue;
      threadIdx = unlinear(unsigned(t), blockDim);
      sanitize::set_thread(t);
      b.body(b.ctx);
    }
    b.plain = false;
    sanitize::block_end();
    return;
  }
  for (int t = 0; t < threads; ++t)
    if (t != b.first) start_fiber(b, t);
  schedule(b, threads);
  sanitize::block_end();
}

// Suspends the running fiber at a barrier of kind `w`.
void wait_at(Wait w) {
  Block& b = t_block;
  if (b.plain) fatal("a barrier reached by this thread was not reached by the block's first thread");
  if (b.current < 0) fatal("a barrier outside a kernel launch");
  if (b.current == b.first) b.first_synced = true;
  Fiber& f = b.fibers[size_t(b.current)];
  f.wait = w;
  if (w == Wait::block)
    ++b.block_waiting;
  else
    ++b.warp_waiting[b.current / 32];
  leave_fiber(b, f, false);
  threadIdx = f.index;
}

}  // namespace

void run_grid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*),
              void* ctx) {
  const int threads = int(block.x * block.y * block.z);
  if (threads < 1 || threads > kMaxThreads) fatal("block size outside [1, 1024] threads");
  const int64_t blocks = int64_t(grid.x) * grid.y * grid.z;
  if (blocks < 1) fatal("empty grid");
  sanitize::Launch launch;
  launch.kernel = kernel;
  sanitize::launch_begin(launch);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, blocks, 1), [&](const tbb::blocked_range<int64_t>& r) {
    Block& b = t_block;
    b.body = body;
    b.ctx = ctx;
    if (b.fibers.size() < size_t(threads)) b.fibers.resize(size_t(threads));
    b.shared.resize((dynamic_shared_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t));
    blockDim = block;
    gridDim = grid;
    sanitize::range_begin(&launch, b.shared.data(), dynamic_shared_bytes);
    for (int64_t i = r.begin(); i < r.end(); ++i) {
      blockIdx = unlinear(unsigned(i), dim3(grid.x, grid.y, grid.z));
      run_block(threads);
    }
    sanitize::range_end();
  });
  sanitize::launch_end(launch);
}

void* dynamic_shared() { return t_block.shared.data(); }

void sync_block() { wait_at(Wait::block); }

void sync_warp() {
  Block& b = t_block;
  if (b.current >= 0) b.warp_fence[b.current / 32] = true;
  wait_at(Wait::warp);
}

uint64_t warp_exchange(uint64_t word, int (*src_lane)(int, int, int), int arg, int width) {
  Block& b = t_block;
  if (b.current < 0) fatal("a warp shuffle outside fiber mode");
  Fiber& f = b.fibers[size_t(b.current)];
  const int me = b.current, warp0 = me & ~31;
  uint64_t* slots = b.exchange[f.exchanges++ & 1u];
  slots[me] = word;
  wait_at(Wait::warp);
  // Every lane has written this buffer, and none can write it again before all have
  // passed the next exchange's barrier, by which time this read is done.
  const int src = warp0 + src_lane(me - warp0, arg, width);
  const int threads = int(blockDim.x * blockDim.y * blockDim.z);
  return src < threads ? slots[src] : word;
}

uint32_t warp_ballot(bool predicate) {
  Block& b = t_block;
  if (b.current < 0) fatal("a warp vote outside fiber mode");
  Fiber& f = b.fibers[size_t(b.current)];
  const int me = b.current, warp0 = me & ~31;
  uint64_t* slots = b.exchange[f.exchanges++ & 1u];
  slots[me] = predicate;
  wait_at(Wait::warp);
  const int threads = int(blockDim.x * blockDim.y * blockDim.z);
  uint32_t votes = 0;
  // A lane that has already finished after this exchange still voted in it: read
  // every existing lane's slot (lanes that exited before it must not be relied on).
  for (int l = 0; l < 32 && warp0 + l < threads; ++l)
    if (slots[warp0 + l]) votes |= 1u << l;
  return votes;
}

}  // namespace strata::emu
