// Entry points of embedding_forward / embedding_backward. Invariant: a token outside
// [0, V) or a position past the table is reported here, naming the token, where it
// is and the table size, before any output or gradient is written (tokens are read
// on the host: CPU device memory is host memory).
#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

// tokens is (B, T) i32.
void check_tokens(const char* op, const TensorView& tokens) {
  check::dtype(op, "tokens", tokens, {DType::i32});
  if (tokens.ndim != 2) check::fail(op, "tokens", tokens, "must be 2-D (B, T)");
}

// Every id in tokens lies in [0, vocab): a scan of host memory, run last so the
// cheap shape errors come first.
void check_token_ids(const char* op, const TensorView& tokens, int64_t vocab, const char* table) {
  const int32_t* ids = tokens.ptr<int32_t>();
  const int64_t T = tokens.shape[1];
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    if (ids[i] >= 0 && ids[i] < vocab) continue;
    check::fail(op, "tokens", tokens,
                "holds token id " + std::to_string(ids[i]) + " at position [" + std::to_string(i / T) +
                    ", " + std::to_string(i % T) + "], outside the vocabulary of '" + table +
                    "' (V = " + std::to_string(vocab) + "): ids must lie in [0, V)");
  }
}

// table is (rows, C).
void check_table(const char* op, const char* arg, const TensorView& table, int64_t C) {
  if (table.ndim != 2) check::fail(op, arg, table, "must be 2-D (rows, C)");
  if (table.shape[1] != C) check::fail(op, arg, table, "must have C = " + std::to_string(C) + " columns");
}

// Positions [pos_offset, pos_offset + T) must be rows of the position table.
void check_positions(const char* op, const char* arg, const TensorView& table, int64_t T,
                     int64_t pos_offset) {
  if (pos_offset < 0 || pos_offset + T > table.shape[0])
    check::fail(op, arg, table,
                "has " + std::to_string(table.shape[0]) + " positions but positions [" +
                    std::to_string(pos_offset) + ", " + std::to_string(pos_offset + T) +
                    ") are needed (pos_offset " + std::to_string(pos_offset) + ", T " + std::to_string(T) +
                    "): the sequence is longer than the model's context");
}

// A parameter gradient: the dtype of the activations, or f32 for f32 accumulation.
void grad_dtype(const char* op, const char* arg, const TensorView& g, const TensorView& d_out) {
  if (d_out.dtype == DType::f32)
    check::same_dtype(op, arg, g, "d_out", d_out);
  else
    check::dtype(op, arg, g, {d_out.dtype, DType::f32});
}

}  // namespace

void embedding_forward(const EmbeddingForwardArgs& a, Stream& s) {
  const char* op = "embedding_forward";
  check::present(op, "out", a.out, s);
  check::present(op, "tokens", a.tokens, s);
  check::present(op, "wte", a.wte, s);
  check::floating(op, "wte", a.wte);
  check::same_dtype(op, "out", a.out, "wte", a.wte);
  if (a.wte.ndim != 2) check::fail(op, "wte", a.wte, "must be 2-D (V, C)");
  const int64_t C = a.wte.shape[1];
  check_tokens(op, a.tokens);
  check::shape(op, "out", a.out, {a.tokens.shape[0], a.tokens.shape[1], C});
  if (a.wpe.defined()) {
    check::present(op, "wpe", a.wpe, s);
    check::same_dtype(op, "wpe", a.wpe, "wte", a.wte);
    check_table(op, "wpe", a.wpe, C);
    check_positions(op, "wpe", a.wpe, a.tokens.shape[1], a.pos_offset);
  }
  // CUDA tokens are device memory: the kernels turn a bad id into NaN (forward) or skip it.
  if (s.device().kind() == DeviceKind::cpu) check_token_ids(op, a.tokens, a.wte.shape[0], "wte");
  run(&Backend::embedding_forward, op, a, s);
}

void embedding_backward(const EmbeddingBackwardArgs& a, Stream& s) {
  const char* op = "embedding_backward";
  check::present(op, "d_out", a.d_out, s);
  check::present(op, "tokens", a.tokens, s);
  check::present(op, "d_wte", a.d_wte, s);
  check::floating(op, "d_out", a.d_out);
  grad_dtype(op, "d_wte", a.d_wte, a.d_out);
  check_table(op, "d_wte", a.d_wte, check::last_dim(a.d_out));
  const int64_t C = a.d_wte.shape[1];
  check_tokens(op, a.tokens);
  check::shape(op, "d_out", a.d_out, {a.tokens.shape[0], a.tokens.shape[1], C});
  if (a.d_wpe.defined()) {
    check::present(op, "d_wpe", a.d_wpe, s);
    grad_dtype(op, "d_wpe", a.d_wpe, a.d_out);
    check_table(op, "d_wpe", a.d_wpe, C);
    check_positions(op, "d_wpe", a.d_wpe, a.tokens.shape[1], a.pos_offset);
  }
  // CUDA tokens are device memory: the kernels turn a bad id into NaN (forward) or skip it.
  if (s.device().kind() == DeviceKind::cpu) check_token_ids(op, a.tokens, a.d_wte.shape[0], "d_wte");
  run(&Backend::embedding_backward, op, a, s);
}

}  // namespace strata::ops
