// Argument errors of add, scale, cast, accumulate and fill_zero (their reference
// cases, for every backend, are in cases/elementwise.cpp), plus bitwise checks that
// the CPU's vectorised conversions round exactly as num::store.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/convert.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

Stream& stream() { return cpu().stream(); }

void run_errors(DType, const std::vector<int64_t>&) {
  HostTensor a(DType::f32, {4, 3}), b(DType::f32, {4, 3}), other(DType::f32, {3, 4});
  HostTensor half(DType::bf16, {4, 3}), f16t(DType::f16, {4, 3}), ints(DType::i32, {4, 3});
  HostTensor empty(DType::f32, {4, 0}), longer(DType::f32, {13});
  TensorView null;
  auto& s = stream();
  REQUIRE_THROWS_WITH(ops::add({a.view(), null, b.view()}, s), Contains("add") && Contains("'a'"));
  REQUIRE_THROWS_WITH(ops::add({a.view(), a.view(), other.view()}, s), Contains("add") && Contains("'b'"));
  REQUIRE_THROWS_WITH(ops::add({a.view(), half.view(), b.view()}, s), Contains("add") && Contains("'a'"));
  REQUIRE_THROWS_WITH(ops::add({ints.view(), ints.view(), ints.view()}, s), Contains("add") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::add({empty.view(), a.view(), b.view()}, s), Contains("add") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::scale({a.view(), other.view(), 2.0f}, s), Contains("scale") && Contains("'inp'"));
  REQUIRE_THROWS_WITH(ops::scale({a.view(), half.view(), 2.0f}, s), Contains("scale") && Contains("'inp'"));
  REQUIRE_THROWS_WITH(ops::scale({null, a.view(), 2.0f}, s), Contains("scale") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::cast({half.view(), longer.view()}, s), Contains("cast") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::cast({half.view(), ints.view()}, s), Contains("cast") && Contains("'inp'"));
  REQUIRE_THROWS_WITH(ops::cast({half.view(), null}, s), Contains("cast") && Contains("'inp'"));
  REQUIRE_THROWS_WITH(ops::accumulate({half.view(), f16t.view()}, s),
                      Contains("accumulate") && Contains("'out'") && Contains("f32 or the dtype"));
  REQUIRE_THROWS_WITH(ops::accumulate({a.view(), other.view()}, s), Contains("accumulate") && Contains("'inp'"));
  REQUIRE_THROWS_WITH(ops::accumulate({a.view(), empty.view()}, s), Contains("accumulate") && Contains("'inp'"));
  REQUIRE_THROWS_WITH(ops::fill_zero(null, s), Contains("fill_zero") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::fill_zero(empty.view(), s), Contains("fill_zero") && Contains("'out'"));
  auto other_device = Device::cpu(1);
  TensorView elsewhere = a.view();
  elsewhere.device = other_device.get();
  REQUIRE_THROWS_WITH(ops::add({a.view(), elsewhere, b.view()}, s), Contains("add") && Contains("cpu:1"));
}

STRATA_OP_CASE({"add", CaseKind::errors, {{1}}, kF32, run_errors});

// ---- bitwise agreement of the vectorised paths with the scalar definition

// Float bit patterns where rounding is delicate: NaNs (quiet, signalling, payloads,
// both signs), infinities, the f16 and bf16 overflow edges, ties, f16 subnormals,
// f32 denormals; then random bit patterns over the whole range.
std::vector<uint32_t> special_float_bits(size_t random_count) {
  std::vector<uint32_t> bits = {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
                                0x7f800001, 0xff800001, 0x7fa00000, 0x7f802000, 0x7fffffff, 0x7f7fffff,
                                0xff7fffff, 0x00000001, 0x807fffff, 0x00800000, 0x3f808000, 0x3f818000,
                                0x3f800001, 0x477fe000, 0x477fefff, 0x477ff000, 0x477fffff, 0x47800000,
                                0x33000000, 0x33000001, 0x33800000, 0x387fc000, 0x387fe000, 0x38800000,
                                0x7f7f8000, 0x7f7f7fff, 0x3f801000, 0x3f803000};
  std::mt19937 rng(12345);
  for (size_t i = 0; i < random_count; ++i) bits.push_back(uint32_t(rng()));
  for (uint32_t b = 0; b < 0x10000u; ++b) bits.push_back(b << 16 | (b * 0x9e37u & 0xffffu));
  return bits;
}

template <class Convert>
void expect_bits(const char* what, const HostTensor& out, size_t n, Convert expected_bits) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t got = 0;
    std::memcpy(&got, static_cast<const char*>(out.view().data) + i * dtype_size(out.dtype()), dtype_size(out.dtype()));
    uint32_t want = expected_bits(i);
    if (got != want && bad++ < 5) FAIL_CHECK(what << " element " << i << ": got 0x" << std::hex << got << ", want 0x" << want);
  }
  CHECK(bad == 0);
}

TEST_CASE("cast rounds bitwise as num::store, NaN payloads included", "[ops][cpu]") {
  const std::vector<uint32_t> bits = special_float_bits(200000);
  const int64_t n = int64_t(bits.size());
  HostTensor src(DType::f32, {n}), to_bf16(DType::bf16, {n}), to_f16(DType::f16, {n});
  std::memcpy(src.view().data, bits.data(), bits.size() * 4);
  ops::cast({to_bf16.view(), src.view()}, cpu().stream());
  ops::cast({to_f16.view(), src.view()}, cpu().stream());
  expect_bits("f32 -> bf16", to_bf16, bits.size(), [&](size_t i) { return num::float_to_bf16(num::bits_float(bits[i])); });
  expect_bits("f32 -> f16", to_f16, bits.size(), [&](size_t i) { return num::float_to_f16(num::bits_float(bits[i])); });

  // Every 16-bit pattern, to f32 and to the other 16-bit type.
  HostTensor h16(DType::f16, {65536}), b16(DType::bf16, {65536});
  HostTensor f(DType::f32, {65536}), cross_b(DType::bf16, {65536}), cross_h(DType::f16, {65536});
  for (uint32_t b = 0; b < 65536; ++b) {
    static_cast<uint16_t*>(h16.view().data)[b] = uint16_t(b);
    static_cast<uint16_t*>(b16.view().data)[b] = uint16_t(b);
  }
  ops::cast({f.view(), h16.view()}, cpu().stream());
  expect_bits("f16 -> f32", f, 65536, [](size_t i) { return num::float_bits(num::f16_to_float(uint16_t(i))); });
  ops::cast({f.view(), b16.view()}, cpu().stream());
  expect_bits("bf16 -> f32", f, 65536, [](size_t i) { return num::float_bits(num::bf16_to_float(uint16_t(i))); });
  ops::cast({cross_b.view(), h16.view()}, cpu().stream());
  expect_bits("f16 -> bf16", cross_b, 65536, [](size_t i) { return num::float_to_bf16(num::f16_to_float(uint16_t(i))); });
  ops::cast({cross_h.view(), b16.view()}, cpu().stream());
  expect_bits("bf16 -> f16", cross_h, 65536, [](size_t i) { return num::float_to_f16(num::bf16_to_float(uint16_t(i))); });
}

TEST_CASE("accumulate in f16 rounds bitwise as num::store", "[ops][cpu]") {
  const int64_t n = 4099;
  HostTensor out(DType::f16, {n}), inp(DType::f16, {n}), f32_out(DType::f32, {n});
  out.uniform(8, -60000, 60000);
  inp.uniform(9, -10000, 10000);
  const std::vector<double> before = out.values(), add = inp.values();
  f32_out.set_values(before);
  ops::accumulate({out.view(), inp.view()}, cpu().stream());
  ops::accumulate({f32_out.view(), inp.view()}, cpu().stream());
  expect_bits("f16 += f16", out, size_t(n), [&](size_t i) { return num::float_to_f16(float(before[i]) + float(add[i])); });
  expect_bits("f32 += f16", f32_out, size_t(n), [&](size_t i) { return num::float_bits(float(before[i]) + float(add[i])); });
}

// All 2^32 floats through the vectorised f32 -> bf16 / f16 casts.
TEST_CASE("cast f32 -> bf16 and f16 match num::store on every float", "[ops][cpu][slow]") {
  const int64_t chunk = int64_t(1) << 22;
  HostTensor src(DType::f32, {chunk}), b(DType::bf16, {chunk}), h(DType::f16, {chunk});
  uint32_t* s = static_cast<uint32_t*>(src.view().data);
  size_t bad = 0;
  for (uint64_t base = 0; base < (uint64_t(1) << 32); base += uint64_t(chunk)) {
    for (int64_t i = 0; i < chunk; ++i) s[i] = uint32_t(base + uint64_t(i));
    ops::cast({b.view(), src.view()}, cpu().stream());
    ops::cast({h.view(), src.view()}, cpu().stream());
    const uint16_t* bb = static_cast<const uint16_t*>(b.view().data);
    const uint16_t* hb = static_cast<const uint16_t*>(h.view().data);
    for (int64_t i = 0; i < chunk; ++i) {
      float x = num::bits_float(s[i]);
      bad += bb[i] != num::float_to_bf16(x);
      bad += hb[i] != num::float_to_f16(x);
    }
  }
  CHECK(bad == 0);
}

}  // namespace
}  // namespace strata::test
