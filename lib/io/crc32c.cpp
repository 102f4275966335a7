// CRC32C (Castagnoli), the checksum of every checkpoint file and tensor.
// SSE4.2's crc32 instruction when the build has it, a byte table otherwise; both
// give the standard CRC32C (reflected, init and final xor 0xffffffff), so
// crc32c("123456789") == 0xe3069283 and crc32c(b, n2, crc32c(a, n1)) == crc32c(a+b).
#include <cstring>

#include "strata/checkpoint.h"

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace strata {

namespace {
#if !defined(__SSE4_2__)
struct Table {
  uint32_t t[256];
  Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
  }
};
#endif
}  // namespace

uint32_t crc32c(const void* data, size_t bytes, uint32_t crc) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
#if defined(__SSE4_2__)
  uint64_t c64 = c;
  while (bytes >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c64 = _mm_crc32_u64(c64, word);
    p += 8;
    bytes -= 8;
  }
  c = uint32_t(c64);
  while (bytes--) c = _mm_crc32_u8(c, *p++);
#else
  static const Table table;
  while (bytes--) c = table.t[(c ^ *p++) & 0xff] ^ (c >> 8);
#endif
  return ~c;
}

}  // namespace strata
