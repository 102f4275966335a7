// Devices, arenas, buffers and tensor views (lib/core): byte accounting, the
// over-capacity error, Buffer ownership under moves, and the errors of
// TensorView::reshape / slice_rows and dtype_from_string.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "strata/device.h"
#include "strata/dtype.h"
#include "strata/error.h"
#include "strata/tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

TEST_CASE("arena counts live and high-water bytes", "[core][device]") {
  Arena arena("test arena", size_t(1) << 20);
  CHECK(arena.capacity() == size_t(1) << 20);
  CHECK(arena.bytes_live() == 0);
  void* a = arena.allocate(100, "a");  // rounded up to 64-byte granules
  CHECK(arena.bytes_live() == 128);
  void* b = arena.allocate(64, "b");
  CHECK(arena.bytes_live() == 192);
  CHECK(reinterpret_cast<uintptr_t>(a) % 64 == 0);
  CHECK(reinterpret_cast<uintptr_t>(b) % 64 == 0);
  arena.free(a);
  CHECK(arena.bytes_live() == 64);
  CHECK(arena.bytes_high_water() == 192);
  arena.reset_high_water();
  CHECK(arena.bytes_high_water() == 64);
  arena.free(b);
  arena.free(nullptr);  // a no-op, like free(3)
  CHECK(arena.bytes_live() == 0);
  CHECK(arena.bytes_high_water() == 64);
}

TEST_CASE("arena refuses requests over capacity and says why", "[core][device]") {
  Arena arena("cpu:7", size_t(2) << 20);
  void* a = arena.allocate(size_t(1) << 20, "weights");  // 1 MiB, 4 KiB aligned
  CHECK(reinterpret_cast<uintptr_t>(a) % 4096 == 0);
  CHECK(arena.bytes_live() == size_t(1) << 20);
  REQUIRE_THROWS_AS(arena.allocate(size_t(3) << 20, "activations"), Error);
  REQUIRE_THROWS_WITH(arena.allocate(size_t(3) << 20, "activations"),
                      Contains("cpu:7") && Contains("3 MiB") && Contains("activations") &&
                          Contains("1 MiB live") && Contains("2 MiB capacity"));
  // A refused request changes nothing, and what fits still fits.
  CHECK(arena.bytes_live() == size_t(1) << 20);
  CHECK(arena.bytes_high_water() == size_t(1) << 20);
  void* b = arena.allocate(size_t(1) << 20, "the rest");
  CHECK(arena.bytes_live() == size_t(2) << 20);
  REQUIRE_THROWS_WITH(arena.allocate(1, "one byte"), Contains("one byte") && Contains("64 B"));
  arena.free(a);
  arena.free(b);
}

// Memory that counts its calls and refuses to hold more than g_limit bytes at once.
size_t g_calls = 0, g_frees = 0, g_held = 0, g_limit = 0;
std::map<void*, size_t> g_blocks;
ArenaMemory counted_segments() {
  ArenaMemory m{[](size_t bytes, size_t alignment) -> void* {
                  if (g_held + bytes > g_limit) return nullptr;
                  ++g_calls;
                  g_held += bytes;
                  void* p = std::aligned_alloc(alignment, bytes);
                  g_blocks[p] = bytes;
                  return p;
                },
                [](void* p) {
                  ++g_frees;
                  g_held -= g_blocks.at(p);
                  g_blocks.erase(p);
                  std::free(p);
                },
                "counted memory"};
  m.segments = true;
  return m;
}

TEST_CASE("a segmented arena sub-allocates, reuses and coalesces blocks", "[core][device]") {
  g_calls = g_frees = g_held = 0;
  g_limit = size_t(1) << 30;
  {
    Arena arena("seg", size_t(256) << 20, counted_segments());
    void* a = arena.allocate(100, "a");
    void* b = arena.allocate(5000, "b");  // 4 KiB aligned inside the segment
    void* c = arena.allocate(64, "c");
    CHECK(g_calls == 1);  // one 32 MiB segment holds all three
    CHECK(arena.bytes_reserved() == size_t(32) << 20);
    CHECK(arena.bytes_live() == 128 + 8192 + 64);
    CHECK(reinterpret_cast<uintptr_t>(a) % 64 == 0);
    CHECK(reinterpret_cast<uintptr_t>(b) % 4096 == 0);
    CHECK(std::set<void*>{a, b, c}.size() == 3);
    // Writing each block whole must not touch another: they do not overlap.
    std::memset(a, 1, 128), std::memset(b, 2, 8192), std::memset(c, 3, 64);
    CHECK(static_cast<unsigned char*>(a)[127] == 1);
    CHECK(static_cast<unsigned char*>(c)[0] == 3);
    // A buffer made and freed every step reuses its block: no call to the memory.
    for (int step = 0; step < 10; ++step) {
      void* g = arena.allocate(4, "gradient norm");
      arena.free(g);
    }
    CHECK(g_calls == 1);
    CHECK(g_frees == 0);
    // Freed neighbours coalesce: after freeing everything, one request the size of the
    // whole segment fits without a new one.
    arena.free(a), arena.free(b), arena.free(c);
    CHECK(arena.bytes_live() == 0);
    void* whole = arena.allocate(size_t(32) << 20, "whole segment");
    CHECK(g_calls == 1);
    // A larger request gets a segment of its own size (2 MiB granules).
    void* big = arena.allocate((size_t(40) << 20) + 1, "big");
    CHECK(g_calls == 2);
    CHECK(arena.bytes_reserved() == (size_t(32) << 20) + (size_t(42) << 20));
    arena.free(whole);
    arena.free(big);
    CHECK(g_frees == 0);  // segments stay with the arena
  }
  CHECK(g_frees == 2);  // until it is destroyed
  CHECK(g_held == 0);
}

TEST_CASE("a segmented arena hands back empty segments when the memory runs out", "[core][device]") {
  g_calls = g_frees = g_held = 0;
  g_limit = size_t(64) << 20;
  Arena arena("seg", size_t(1) << 30, counted_segments());
  void* a = arena.allocate(size_t(40) << 20, "a");  // a 40 MiB segment
  arena.free(a);                                    // empty, kept
  // 48 MiB does not fit in the 40 MiB segment, and 40 + 48 exceeds the memory: the
  // arena frees the empty segment and retries.
  void* b = arena.allocate(size_t(48) << 20, "b");
  CHECK(g_frees == 1);
  CHECK(arena.bytes_reserved() == size_t(48) << 20);
  // A live segment is never handed back: the failure names the memory and the request.
  REQUIRE_THROWS_WITH(arena.allocate(size_t(20) << 20, "c"), Contains("out of counted memory") && Contains("c"));
  CHECK(arena.bytes_live() == size_t(48) << 20);
  arena.free(b);
}

TEST_CASE("a device's buffers come from its arena and move without copying", "[core][device]") {
  auto device = Device::cpu(3, size_t(1) << 20);
  CHECK(device->name() == "cpu:3");
  CHECK(device->kind() == DeviceKind::cpu);
  Arena& arena = device->arena();
  {
    Buffer a(*device, 1000, "a");
    CHECK(arena.bytes_live() == 1024);
    void* p = a.data();
    CHECK(a.size() == 1000);
    CHECK(a.device() == device.get());

    Buffer b(std::move(a));
    CHECK(b.data() == p);
    CHECK(a.data() == nullptr);
    CHECK(a.size() == 0);
    CHECK(a.device() == nullptr);
    CHECK(arena.bytes_live() == 1024);

    Buffer c(*device, 64, "c");
    CHECK(arena.bytes_live() == 1088);
    c = std::move(b);  // c's own 64 bytes go back to the arena
    CHECK(c.data() == p);
    CHECK(b.data() == nullptr);
    CHECK(arena.bytes_live() == 1024);

    Buffer& same = c;
    c = std::move(same);  // self-move keeps the memory
    CHECK(c.data() == p);
    CHECK(arena.bytes_live() == 1024);

    REQUIRE_THROWS_WITH(Buffer(*device, size_t(2) << 20, "too big"), Contains("too big") && Contains("cpu:3"));
  }
  CHECK(arena.bytes_live() == 0);  // destructors freed everything, moved-from ones nothing twice
}

TEST_CASE("tensor views reshape and slice, and refuse what does not fit", "[core][tensor]") {
  float data[24] = {};
  TensorView t(data, DType::f32, {2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(t.nbytes() == 96);
  CHECK(t.size(-1) == 4);
  CHECK(t.str() == "f32[2, 3, 4]");
  TensorView r = t.reshape({6, 4});
  CHECK(r.data == t.data);
  CHECK(r.str() == "f32[6, 4]");
  TensorView s = r.slice_rows(2, 5);
  CHECK(s.data == static_cast<void*>(data + 8));
  CHECK(s.str() == "f32[3, 4]");
  CHECK(r.slice_rows(6, 6).numel() == 0);

  REQUIRE_THROWS_WITH(t.reshape({5, 5}), Contains("reshape") && Contains("f32[2, 3, 4]") && Contains("25"));
  REQUIRE_THROWS_WITH(r.slice_rows(2, 7), Contains("slice_rows") && Contains("[2, 7)") && Contains("f32[6, 4]"));
  REQUIRE_THROWS_WITH(r.slice_rows(4, 3), Contains("slice_rows"));
  REQUIRE_THROWS_WITH(r.slice_rows(-1, 2), Contains("slice_rows"));
  REQUIRE_THROWS_WITH(t.size(3), Contains("size") && Contains("3"));
  REQUIRE_THROWS_WITH(TensorView(data, DType::f32, {1, 1, 1, 1, 1}), Contains("5 dimensions"));
  REQUIRE_THROWS_WITH(TensorView(data, DType::f32, {2, -3}), Contains("negative dimension -3"));
}

TEST_CASE("dtype names parse and unknown ones are refused", "[core][dtype]") {
  CHECK(dtype_from_string("f32") == DType::f32);
  CHECK(dtype_from_string("float32") == DType::f32);
  CHECK(dtype_from_string("bfloat16") == DType::bf16);
  CHECK(dtype_from_string("fp16") == DType::f16);
  CHECK(dtype_from_string("i32") == DType::i32);
  for (DType d : {DType::f32, DType::bf16, DType::f16, DType::i32}) CHECK(dtype_from_string(dtype_name(d)) == d);
  CHECK(dtype_size(DType::bf16) == 2);
  CHECK(dtype_size(DType::i32) == 4);
  REQUIRE_THROWS_AS(dtype_from_string("float64"), Error);
  REQUIRE_THROWS_WITH(dtype_from_string("float64"), Contains("'float64'") && Contains("bf16") && Contains("f16"));
  REQUIRE_THROWS_WITH(dtype_from_string(""), Contains("''"));
  REQUIRE_THROWS_WITH(dtype_from_string("BF16"), Contains("BF16"));
}

}  // namespace
}  // namespace strata::test
