// The CUDA-free parts of matmul.cu's cuBLASLt plan cache (kernels/cuda/gemm_plan.h):
// operand alignment from pointer and leading dimension, the key's equality and hash,
// the GEMM description errors carry, the cache's make-once / thread-safety / cap, and
// the keys of the padded-vocabulary head's GEMMs.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "cuda/gemm_plan.h"

using namespace strata;
using gemm::alignment_bytes;

namespace {
const void* at(uintptr_t address) { return reinterpret_cast<const void*>(address); }

gemm::GemmKey qkv_key() {  // gpt2-small's qkv GEMM in bf16, as matmul_forward builds it
  gemm::GemmKey k;
  k.m = 2304, k.n = 16384, k.k = 768, k.lda = 768, k.ldb = 768, k.ldd = 2304;
  k.a = k.b = k.d = DType::bf16, k.trans_a = true, k.epilogue = gemm::Epilogue::bias;
  k.align_a = 16, k.align_b = 256, k.align_d = 64, k.align_bias = 32;
  return k;
}
}  // namespace

TEST_CASE("gemm alignment is the largest power of two dividing pointer and column stride, at most 256",
          "[cpu][gemm_plan]") {
  CHECK(alignment_bytes(at(0x10000), 1024, 2) == 256);  // both aligned past the cap
  CHECK(alignment_bytes(at(0x10040), 1024, 2) == 64);   // a 64-byte aligned arena view
  CHECK(alignment_bytes(at(0x10002), 1024, 2) == 2);    // a view at an odd bf16 offset
  CHECK(alignment_bytes(at(0x10000), 50257, 2) == 2);   // gpt2's vocabulary: odd ld, 2-byte columns
  CHECK(alignment_bytes(at(0x10000), 50304, 2) == 256);  // padded to a multiple of 64: 100608 B = 393 x 256
  CHECK(alignment_bytes(at(0x10000), 50257, 4) == 4);
  CHECK(alignment_bytes(at(0x10000), 768, 4) == 256);
  CHECK(alignment_bytes(at(0x10008), 768, 4) == 8);
  CHECK(alignment_bytes(at(0x10000), 12, 2) == 8);  // the column stride limits: 24 bytes
}

// gpt2-small's head in bf16 (B 16 x T 1024 rows, C 768, V 50257), with the pointers
// the head really has: the weight at a 4 KiB-aligned flat buffer, the activations
// carved 64-byte aligned. Padded to Vp = 50304, every operand of the three GEMMs is
// at least 16-byte aligned (64 here: the pointers limit, not the leading
// dimensions); unpadded, the logits' ld 50257 leaves 2-byte alignment.
TEST_CASE("gemm keys of the padded-vocabulary head see 16-byte aligned operands", "[cpu][gemm_plan]") {
  const int64_t n = 16 * 1024, c = 768, v = 50257, vp = 50304;
  void* logits = reinterpret_cast<void*>(uintptr_t(0x7f0000000040));  // 64-byte aligned, as carve()
  void* lnf = reinterpret_cast<void*>(uintptr_t(0x7e0000000040));
  void* weight = reinterpret_cast<void*>(uintptr_t(0x7d0000001000));  // a unit's flat buffer
  for (int64_t ld : {vp, v}) {
    INFO("logits row stride " << ld);
    const TensorView out(logits, DType::bf16, {n, ld}), inp(lnf, DType::bf16, {n, c}), w(weight, DType::bf16, {v, c});
    ops::MatmulForwardArgs f{out, inp, w, {}};
    f.out_padded = ld != v;
    ops::MatmulBackwardArgs b{inp, TensorView(weight, DType::f32, {v, c}), {}, out, inp, w};
    b.d_out_padded = ld != v;
    const gemm::GemmKey fwd = gemm::key_of(gemm::forward_call(f, f.out), nullptr, nullptr);
    const gemm::GemmKey dx = gemm::key_of(gemm::input_grad_call(b), nullptr, nullptr);
    const gemm::GemmKey dw = gemm::key_of(gemm::weight_grad_call(b), nullptr, nullptr);
    CHECK(fwd.m == v);  // only the real vocabulary is computed
    CHECK(fwd.ldd == ld);
    CHECK(dx.ldb == ld);
    CHECK(dw.ldb == ld);
    CHECK(dw.n == v);
    const uint32_t want = ld == vp ? 64 : 2;
    CHECK(fwd.align_d == want);
    CHECK(dx.align_b == want);
    CHECK(dw.align_b == want);
    CHECK(fwd.align_a == 256);  // W (V, C): ld 768 x 2 B and a 4 KiB-aligned start
    CHECK(dx.align_d == 64);
    CHECK(dw.align_d == 256);
  }
}

TEST_CASE("gemm keys differ in every field the heuristic reads", "[cpu][gemm_plan]") {
  const gemm::GemmKey base = qkv_key();
  gemm::GemmKeyHash hash;
  CHECK(base == qkv_key());
  CHECK(hash(base) == hash(qkv_key()));
  std::vector<gemm::GemmKey> variants(17, base);
  variants[0].m = 768, variants[1].n = 8192, variants[2].k = 3072, variants[3].lda = 2304;
  variants[4].ldb = 1024, variants[5].ldd = 4096, variants[6].a = DType::f16, variants[7].b = DType::f32;
  variants[8].d = DType::f32, variants[9].trans_a = false, variants[10].trans_b = true;
  variants[11].epilogue = gemm::Epilogue::gelu_aux_bias, variants[12].align_a = 2, variants[13].align_b = 128;
  variants[14].align_d = 4, variants[15].align_bias = 2, variants[16].align_aux = 16;
  for (const gemm::GemmKey& v : variants) {
    CHECK_FALSE(v == base);
    CHECK(hash(v) != hash(base));  // FNV-1a over distinct small fields: no collision here
  }
}

TEST_CASE("gemm description names shape, dtypes, transposes, alignments and epilogue", "[cpu][gemm_plan]") {
  CHECK(gemm::describe(qkv_key()) ==
        "GEMM m 2304 n 16384 k 768: A bf16 T ld 768 (16-byte aligned), B bf16 N ld 768 (256-byte aligned), "
        "D bf16 ld 2304 (64-byte aligned), epilogue bias (bias 32-byte aligned)");
  gemm::GemmKey fc = qkv_key();
  fc.epilogue = gemm::Epilogue::gelu_aux_bias, fc.align_aux = 128;
  CHECK(gemm::describe(fc).find("epilogue gelu_aux_bias (bias 32-byte aligned, aux ld 2304, 128-byte aligned)") !=
        std::string::npos);
  fc.epilogue = gemm::Epilogue::none;
  CHECK(gemm::describe(fc).find("epilogue none") + 13 == gemm::describe(fc).size());  // no epilogue pointers
  CHECK(gemm::epilogue_of(false, false) == gemm::Epilogue::none);
  CHECK(gemm::epilogue_of(true, false) == gemm::Epilogue::bias);
  CHECK(gemm::epilogue_of(false, true) == gemm::Epilogue::gelu_aux);
  CHECK(gemm::epilogue_of(true, true) == gemm::Epilogue::gelu_aux_bias);
  CHECK(std::string(gemm::epilogue_name(gemm::Epilogue::gelu_aux)) == "gelu_aux");
}

TEST_CASE("gemm plan cache makes each plan once, keeps a failed make out, and starts over past its capacity",
          "[cpu][gemm_plan]") {
  struct Plan {
    int id;
  };
  gemm::PlanCache<Plan> cache(3);
  int next = 0;
  auto make = [&] { return Plan{next++}; };
  auto id = [](Plan& p) { return p.id; };
  gemm::GemmKey a = qkv_key(), b = qkv_key(), c = qkv_key(), d = qkv_key();
  b.n = 1, c.n = 2, d.n = 3;
  CHECK(cache.with(a, make, id) == 0);
  CHECK(cache.with(a, make, id) == 0);  // cached: make not called again
  CHECK(cache.with(b, make, id) == 1);
  CHECK(cache.made() == 2);
  CHECK_THROWS(cache.with(c, [&]() -> Plan { throw std::runtime_error("no algorithm"); }, id));
  CHECK(cache.size() == 2);
  CHECK(cache.with(c, make, id) == 2);
  CHECK(cache.size() == 3);
  CHECK(cache.with(d, make, id) == 3);  // a fourth key: the cache started over
  CHECK(cache.size() == 1);
  CHECK(cache.with(a, make, id) == 4);  // made again
}

TEST_CASE("gemm plan cache shared by threads makes one plan per key", "[cpu][gemm_plan]") {
  struct Plan {
    int uses = 0;
  };
  gemm::PlanCache<Plan> cache;
  std::atomic<int> made{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        gemm::GemmKey k = qkv_key();
        k.n = i % 5;
        cache.with(
            k, [&] { return ++made, Plan{}; }, [](Plan& p) { return ++p.uses; });  // the lock guards uses
      }
    });
  for (auto& t : threads) t.join();
  CHECK(made == 5);
  CHECK(cache.made() == 5);
  int uses = 0;
  for (int i = 0; i < 5; ++i) {
    gemm::GemmKey k = qkv_key();
    k.n = i;
    uses += cache.with(k, [] { return Plan{}; }, [](Plan& p) { return p.uses; });
  }
  CHECK(uses == 8 * 200);
}
