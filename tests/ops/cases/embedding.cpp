// Reference cases for embedding_forward / embedding_backward, for every backend: a
// double reference of the gather (and of the scatter-add into accumulated gradients),
// with and without positions, gradients in the table's dtype and in f32. Finite
// differences and the bad-token / too-long-sequence errors: tests/ops/test_embedding.cpp.
// Shapes are {B, T, C, V, maxT}; pos_offset is maxT - T, so the last positions are used.
#include "ops.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

struct Dims {
  int64_t B, T, C, V, maxT, pos_offset;
};

Dims dims_of(const std::vector<int64_t>& s) { return {s[0], s[1], s[2], s[3], s[4], s[4] - s[1]}; }

// C past one block of columns, V past one block of vocabulary rows (the CUDA kernels').
const std::vector<std::vector<int64_t>> kShapes = {{1, 1, 1, 1, 1},    {3, 17, 5, 1000, 20}, {2, 3, 1000, 17, 8},
                                                   {4, 17, 33, 3, 17}, {17, 5, 16, 1000, 5}, {3, 40, 130, 150, 42}};

// A gather and one add per element, and the backward's sums in token order on every
// backend: the emulator gives the CPU's bits; real hardware keeps its former tolerance.
constexpr double kBitwise = 0.0, kHardwareSlack = 1.0;

HostTensor make_tokens(const Dims& d, uint64_t seed) {
  HostTensor tokens(DType::i32, {d.B, d.T});
  tokens.tokens(seed, int32_t(d.V));
  if (d.V > 3 && d.B * d.T > 1) tokens.set(0, 3), tokens.set(1, 3);  // a repeated token: its sum has an order
  return tokens;
}

void run_forward(OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
  const Dims d = dims_of(shape);
  HostTensor tokens = make_tokens(d, 3), wte(dtype, {d.V, d.C}), wpe(dtype, {d.maxT, d.C});
  wte.uniform(4);
  wpe.uniform(5);
  for (bool with_wpe : {true, false}) {
    HostTensor out(dtype, {d.B, d.T, d.C});
    ops::embedding_forward({e.at(out), e.at(tokens), e.at(wte), with_wpe ? e.at(wpe) : TensorView{}, d.pos_offset},
                           e.stream());
    std::vector<double> ref(size_t(d.B * d.T * d.C));
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t t = 0; t < d.T; ++t) {
        const int64_t tok = int64_t(tokens.get(b * d.T + t));
        for (int64_t c = 0; c < d.C; ++c)
          ref[size_t((b * d.T + t) * d.C + c)] =
              wte.get(tok * d.C + c) + (with_wpe ? wpe.get((t + d.pos_offset) * d.C + c) : 0.0);
      }
    e.expect(with_wpe ? "out" : "out (no wpe)", out, ref, tolerance_for(dtype));
  }
}

void run_backward(OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
  const Dims d = dims_of(shape);
  HostTensor tokens = make_tokens(d, 8), d_out(dtype, {d.B, d.T, d.C});
  d_out.uniform(9);
  for (DType gdt : {dtype, DType::f32})
    for (bool with_wpe : {true, false}) {
      const std::string variant = std::string(" (") + dtype_name(gdt) + (with_wpe ? ")" : ", no wpe)");
      HostTensor d_wte(gdt, {d.V, d.C}), d_wpe(gdt, {d.maxT, d.C});
      d_wte.uniform(10);  // accumulated into
      d_wpe.uniform(11);
      std::vector<double> ref_wte = d_wte.values(), ref_wpe = d_wpe.values();
      HostTensor again_wte = d_wte, again_wpe = d_wpe;
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t t = 0; t < d.T; ++t) {
          const int64_t tok = int64_t(tokens.get(b * d.T + t));
          for (int64_t c = 0; c < d.C; ++c) {
            const double g = d_out.get((b * d.T + t) * d.C + c);
            ref_wte[size_t(tok * d.C + c)] += g;
            if (with_wpe) ref_wpe[size_t((t + d.pos_offset) * d.C + c)] += g;
          }
        }
      auto run = [&](HostTensor& g_wte, HostTensor& g_wpe) {
        ops::embedding_backward(
            {e.at(g_wte), with_wpe ? e.at(g_wpe) : TensorView{}, e.at(d_out), e.at(tokens), d.pos_offset}, e.stream());
      };
      run(d_wte, d_wpe);
      e.expect("d_wte" + variant, d_wte, ref_wte, tolerance_for(gdt));
      if (with_wpe) e.expect("d_wpe" + variant, d_wpe, ref_wpe, tolerance_for(gdt));
      // Deterministic: the same inputs give the same bits.
      run(again_wte, again_wpe);
      e.expect("d_wte again" + variant, again_wte, d_wte.values(), {0, 0});
      if (with_wpe) e.expect("d_wpe again" + variant, again_wpe, d_wpe.values(), {0, 0});
    }
}

STRATA_OP_CASE(reference_case("embedding_forward", kShapes, kAllFloat, run_forward, kBitwise, kHardwareSlack));
STRATA_OP_CASE(reference_case("embedding_backward", kShapes, kAllFloat, run_backward, kBitwise, kHardwareSlack));

}  // namespace
}  // namespace strata::test
