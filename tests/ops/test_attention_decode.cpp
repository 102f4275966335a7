// CPU-only cases for attention_decode: agreement with attention_forward when the whole
// causal sequence is decoded at once (also under a sliding window), and argument
// errors. Reference cases for every backend: tests/ops/cases/attention_decode.cpp.
#include <catch2/catch.hpp>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

TEST_CASE("attention_decode of a whole sequence from position 0 is causal attention_forward", "[ops][cpu]") {
  const DType dtype = GENERATE(DType::f32, DType::bf16);
  const int64_t window = GENERATE(0, 1, 5);
  INFO("window " << window);
  const int64_t B = 2, T = 19, NH = 3, HD = 8;
  HostTensor qkv(dtype, {B, T, 3 * NH * HD}), a(dtype, {B, T, NH, HD}), b(dtype, {B, T, NH, HD});
  HostTensor lse(DType::f32, {B, NH, T}), kc(dtype, {B, NH, T, HD}), vc(dtype, {B, NH, T, HD});
  qkv.uniform(7, -2, 2);
  ops::AttentionForwardArgs f;
  f.out = a.view(), f.lse = lse.view(), f.qkv = qkv.view(), f.n_heads = NH, f.causal = true, f.window = window;
  ops::attention_forward(f, cpu().stream());
  ops::attention_decode({b.view(), qkv.view(), kc.view(), vc.view(), NH, 0, window}, cpu().stream());
  expect_close("decode vs forward", b, a.values(), tolerance_for(dtype));
}

void errors_case(DType, const std::vector<int64_t>&) {
  HostTensor qkv(DType::f32, {2, 3, (4 + 2 * 2) * 8}), out(DType::f32, {2, 3, 4, 8});
  HostTensor kc(DType::f32, {2, 2, 10, 8}), vc(DType::f32, {2, 2, 10, 8}), bf(DType::bf16, {2, 2, 10, 8});
  HostTensor short_v(DType::f32, {2, 2, 9, 8}), flat(DType::f32, {2, 20, 8});
  const ops::AttentionDecodeArgs good{out.view(), qkv.view(), kc.view(), vc.view(), 4, 7};
  auto run = [&](auto change, const char* arg) {
    ops::AttentionDecodeArgs x = good;
    change(x);
    REQUIRE_THROWS_WITH(ops::attention_decode(x, cpu().stream()),
                        Catch::Contains("attention_decode") && Catch::Contains(std::string("'") + arg + "'"));
  };
  run([](auto& x) { x.k_cache = TensorView(); }, "k_cache");
  run([&](auto& x) { x.k_cache = flat.view(); }, "k_cache");
  run([&](auto& x) { x.k_cache = bf.view(); }, "k_cache");
  run([&](auto& x) { x.v_cache = short_v.view(); }, "v_cache");
  run([](auto& x) { x.n_heads = 3; }, "n_heads");
  run([](auto& x) { x.n_heads = 2; }, "qkv");
  run([](auto& x) { x.pos = 8; }, "pos");  // 8 + 3 rows > 10 positions
  run([](auto& x) { x.pos = -1; }, "pos");
  run([](auto& x) { x.window = -2; }, "window");
  ops::attention_decode(good, cpu().stream());  // and the unchanged arguments run
}

STRATA_OP_CASE({"attention_decode", CaseKind::errors, {{0}}, kF32, errors_case});

}  // namespace
}  // namespace strata::test
