// bf16 / f16 <-> f32 conversions (kernels/common/convert.h): edge cases by hand,
// exhaustive round trips over every 16-bit pattern, and float -> 16-bit checked
// against an independent reference (nearest value by search, ties to even) on a few
// hundred thousand random and chosen floats.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/convert.h"
#include "strata/dtype.h"

namespace strata::test {
namespace {

using num::bits_float;
using num::float_bits;

bool bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0; }
bool f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

TEST_CASE("bf16 rounds to nearest, ties to even", "[core][dtype]") {
  CHECK(num::float_to_bf16(bits_float(0x3f808000)) == 0x3f80);  // tie, even below
  CHECK(num::float_to_bf16(bits_float(0x3f818000)) == 0x3f82);  // tie, even above
  CHECK(num::float_to_bf16(bits_float(0x3f808001)) == 0x3f81);  // just past the tie
  CHECK(num::float_to_bf16(bits_float(0x3f807fff)) == 0x3f80);
  CHECK(num::float_to_bf16(bits_float(0xbf818000)) == 0xbf82);  // sign does not matter
  CHECK(num::float_to_bf16(bits_float(0xbf808000)) == 0xbf80);
  CHECK(num::float_to_bf16(1.0f) == 0x3f80);
  CHECK(num::float_to_bf16(-2.0f) == 0xc000);
}

TEST_CASE("f16 rounds to nearest, ties to even", "[core][dtype]") {
  const float ulp = std::ldexp(1.0f, -10);  // of 1.0 in f16
  CHECK(num::float_to_f16(1.0f + ulp / 2) == 0x3c00);      // tie, even below
  CHECK(num::float_to_f16(1.0f + 3 * ulp / 2) == 0x3c02);  // tie, even above
  CHECK(num::float_to_f16(std::nextafter(1.0f + ulp / 2, 2.0f)) == 0x3c01);
  CHECK(num::float_to_f16(-(1.0f + 3 * ulp / 2)) == 0xbc02);
  CHECK(num::float_to_f16(1.0f) == 0x3c00);
  CHECK(num::float_to_f16(-2.0f) == 0xc000);
  CHECK(num::float_to_f16(0.1f) == 0x2e66);
}

TEST_CASE("NaN stays NaN (quiet, sign kept) and infinities stay infinite", "[core][dtype]") {
  // 0x7f800001 is a signalling NaN whose payload lives only in the low bits: a plain
  // truncation would turn it into Inf.
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fa00000u, 0x7fffffffu}) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      INFO("NaN bits " << std::hex << (nan | sign));
      uint16_t b = num::float_to_bf16(bits_float(nan | sign));
      CHECK(bf16_is_nan(b));
      CHECK((b & 0x0040) != 0);  // quiet
      CHECK((b & 0x8000) == (sign >> 16));
      uint16_t h = num::float_to_f16(bits_float(nan | sign));
      CHECK(f16_is_nan(h));
      CHECK((h & 0x0200) != 0);
      CHECK((h & 0x8000) == (sign >> 16));
      CHECK(std::isnan(num::bf16_to_float(b)));
      CHECK(std::isnan(num::f16_to_float(h)));
    }
  }
  CHECK(num::float_to_bf16(INFINITY) == 0x7f80);
  CHECK(num::float_to_bf16(-INFINITY) == 0xff80);
  CHECK(num::float_to_f16(INFINITY) == 0x7c00);
  CHECK(num::float_to_f16(-INFINITY) == 0xfc00);
  CHECK(num::bf16_to_float(0xff80) == -INFINITY);
  CHECK(num::f16_to_float(0x7c00) == INFINITY);
}

TEST_CASE("values past the largest finite round to infinity", "[core][dtype]") {
  // bf16: largest finite 0x7f7f; halfway to the next binade's first value is a tie
  // whose even neighbour is Inf.
  CHECK(num::float_to_bf16(bits_float(0x7f7f7fff)) == 0x7f7f);
  CHECK(num::float_to_bf16(bits_float(0x7f7f8000)) == 0x7f80);
  CHECK(num::float_to_bf16(bits_float(0x7f7fffff)) == 0x7f80);  // FLT_MAX
  CHECK(num::float_to_bf16(bits_float(0xff7fffff)) == 0xff80);
  // f16: largest finite 65504; from 65520 (the tie) on, Inf.
  CHECK(num::float_to_f16(65504.0f) == 0x7bff);
  CHECK(num::float_to_f16(std::nextafter(65520.0f, 0.0f)) == 0x7bff);
  CHECK(num::float_to_f16(65520.0f) == 0x7c00);
  CHECK(num::float_to_f16(-65520.0f) == 0xfc00);
  CHECK(num::float_to_f16(1e10f) == 0x7c00);
  CHECK(num::f16_to_float(0x7bff) == 65504.0f);
}

TEST_CASE("subnormals are produced and consumed exactly", "[core][dtype]") {
  const float tiny = std::ldexp(1.0f, -24);  // smallest f16 subnormal
  CHECK(num::float_to_f16(tiny) == 0x0001);
  CHECK(num::float_to_f16(-tiny) == 0x8001);
  CHECK(num::float_to_f16(tiny / 2) == 0x0000);  // tie with zero: even
  CHECK(num::float_to_f16(-tiny / 2) == 0x8000);
  CHECK(num::float_to_f16(std::nextafter(tiny / 2, 1.0f)) == 0x0001);
  CHECK(num::float_to_f16(3 * tiny / 2) == 0x0002);  // tie between 1 and 2
  CHECK(num::float_to_f16(5 * tiny / 2) == 0x0002);  // tie between 2 and 3
  CHECK(num::float_to_f16(1023 * tiny) == 0x03ff);   // largest subnormal
  CHECK(num::float_to_f16(1023.5f * tiny) == 0x0400);  // tie: carries into the smallest normal
  CHECK(num::float_to_f16(std::ldexp(1.0f, -14)) == 0x0400);
  CHECK(num::f16_to_float(0x0001) == tiny);
  CHECK(num::f16_to_float(0x8001) == -tiny);
  CHECK(num::f16_to_float(0x03ff) == 1023 * tiny);
  CHECK(num::f16_to_float(0x0200) == 512 * tiny);
  // bf16 subnormals are f32 denormals with the low 16 bits cleared.
  CHECK(num::bf16_to_float(0x0001) == std::ldexp(1.0f, -133));
  CHECK(num::float_to_bf16(std::ldexp(1.0f, -133)) == 0x0001);
  CHECK(num::float_to_bf16(bits_float(0x00008000)) == 0x0000);  // tie with zero
  CHECK(num::float_to_bf16(bits_float(0x00018000)) == 0x0002);  // tie between 1 and 2
  CHECK(num::float_to_bf16(bits_float(0x007fffff)) == 0x0080);  // rounds into the normals
  CHECK(num::float_to_bf16(bits_float(0x80010000)) == 0x8001);
}

TEST_CASE("every bf16 and f16 pattern survives a round trip through float", "[core][dtype]") {
  for (uint32_t h = 0; h < 65536; ++h) {
    uint16_t b = uint16_t(h);
    uint16_t via_bf16 = num::float_to_bf16(num::bf16_to_float(b));
    uint16_t via_f16 = num::float_to_f16(num::f16_to_float(b));
    if (bf16_is_nan(b)) {
      if (!bf16_is_nan(via_bf16)) FAIL("bf16 NaN 0x" << std::hex << h << " came back as 0x" << via_bf16);
      if ((b & 0x40) && via_bf16 != b) FAIL("quiet bf16 NaN 0x" << std::hex << h << " changed");
    } else if (via_bf16 != b) {
      FAIL("bf16 0x" << std::hex << h << " came back as 0x" << via_bf16);
    }
    if (f16_is_nan(b)) {
      if (!f16_is_nan(via_f16)) FAIL("f16 NaN 0x" << std::hex << h << " came back as 0x" << via_f16);
      if ((b & 0x200) && via_f16 != b) FAIL("quiet f16 NaN 0x" << std::hex << h << " changed");
    } else if (via_f16 != b) {
      FAIL("f16 0x" << std::hex << h << " came back as 0x" << via_f16);
    }
  }
  SUCCEED();
}

// ---- independent reference: nearest representable value by search

// The non-negative finite values of a 16-bit format in increasing order (their
// bit patterns are increasing too), then one step past the largest, standing for
// Inf: a value at or beyond the midpoint rounds there, as IEEE overflow does.
struct Format {
  std::vector<double> values;
  std::vector<uint16_t> bits;
};

Format make_format(uint16_t max_finite, uint16_t inf_bits, double (*decode)(uint16_t)) {
  Format f;
  for (uint32_t b = 0; b <= max_finite; ++b) {
    f.values.push_back(decode(uint16_t(b)));
    f.bits.push_back(uint16_t(b));
  }
  double ulp = f.values.back() - f.values[f.values.size() - 2];
  f.values.push_back(f.values.back() + ulp);
  f.bits.push_back(inf_bits);
  return f;
}

// Decoders written from the format definitions, not from convert.h.
double decode_bf16(uint16_t b) {
  int exp = (b >> 7) & 0xff, man = b & 0x7f;
  return exp == 0 ? std::ldexp(double(man), -133) : std::ldexp(1.0 + man / 128.0, exp - 127);
}
double decode_f16(uint16_t b) {
  int exp = (b >> 10) & 0x1f, man = b & 0x3ff;
  return exp == 0 ? std::ldexp(double(man), -24) : std::ldexp(1.0 + man / 1024.0, exp - 15);
}

uint16_t reference_round(const Format& f, float x) {
  double a = std::fabs(double(x));
  uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isinf(x) || a >= f.values.back()) return uint16_t(sign | f.bits.back());
  size_t hi = size_t(std::upper_bound(f.values.begin(), f.values.end(), a) - f.values.begin());
  size_t lo = hi - 1;
  if (f.values[lo] == a) return uint16_t(sign | f.bits[lo]);
  double below = a - f.values[lo], above = f.values[hi] - a;  // exact in double
  size_t pick = below < above ? lo : above < below ? hi : (f.bits[lo] & 1 ? hi : lo);
  return uint16_t(sign | f.bits[pick]);
}

std::vector<float> probe_floats(const Format& f) {
  std::vector<float> xs;
  std::mt19937 rng(2024);
  while (xs.size() < 200000) {  // all magnitudes; NaN has its own test above
    float x = bits_float(uint32_t(rng()));
    if (!std::isnan(x)) xs.push_back(x);
  }
  std::uniform_real_distribution<float> moderate(-70000.0f, 70000.0f);
  for (int i = 0; i < 50000; ++i) xs.push_back(moderate(rng));
  // Midpoints between neighbours (ties) and the floats on either side of them.
  std::uniform_int_distribution<size_t> pick(0, f.values.size() - 2);
  for (int i = 0; i < 50000; ++i) {
    size_t k = pick(rng);
    float mid = float((f.values[k] + f.values[k + 1]) / 2);
    xs.insert(xs.end(), {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), -mid});
  }
  for (double v : f.values) xs.push_back(float(v));
  return xs;
}

template <class Convert>
void check_against_reference(const char* name, const Format& f, Convert convert) {
  size_t bad = 0;
  std::vector<float> xs = probe_floats(f);
  for (float x : xs) {
    uint16_t want = reference_round(f, x), got = convert(x);
    if (got != want && bad++ < 5)
      FAIL_CHECK(name << "(" << x << ", bits 0x" << std::hex << float_bits(x) << "): got 0x" << got
                      << ", reference 0x" << want);
  }
  INFO(xs.size() << " floats probed");
  CHECK(bad == 0);
}

TEST_CASE("float -> bf16 and f16 match a nearest-value search with ties to even", "[core][dtype]") {
  check_against_reference("float_to_bf16", make_format(0x7f7f, 0x7f80, decode_bf16), num::float_to_bf16);
  check_against_reference("float_to_f16", make_format(0x7bff, 0x7c00, decode_f16), num::float_to_f16);
  // The public host functions are the same conversions.
  check_against_reference("strata::float_to_f16", make_format(0x7bff, 0x7c00, decode_f16), strata::float_to_f16);
  CHECK(strata::bf16_to_float(0x3f80) == 1.0f);
  CHECK(strata::f16_to_float(0x3c00) == 1.0f);
  CHECK(strata::float_to_bf16(1.0f) == 0x3f80);
}

TEST_CASE("16-bit -> float decodes every finite pattern exactly", "[core][dtype]") {
  for (uint32_t b = 0; b < 65536; ++b) {
    uint16_t h = uint16_t(b);
    double sign = (h & 0x8000) ? -1.0 : 1.0;
    if ((h & 0x7f80) != 0x7f80 && double(num::bf16_to_float(h)) != sign * decode_bf16(h & 0x7fff))
      FAIL("bf16 0x" << std::hex << b);
    if ((h & 0x7c00) != 0x7c00 && double(num::f16_to_float(h)) != sign * decode_f16(h & 0x7fff))
      FAIL("f16 0x" << std::hex << b);
  }
  SUCCEED();
}

}  // namespace
}  // namespace strata::test
