// Bandwidth of the memory-bound ops of the elementwise, adamw families: achieved
// GB/s (bytes the op must read + write) next to a parallel memcpy moving the same
// bytes in the same run. An op near 1.0x is as fast as memory allows.
// Invariant: byte counts are what the op cannot avoid moving, so a ratio above 1.0x
// would mean the count is wrong, not that the op beat memory.
#include "bench.h"
#include "kernels/ops.h"

namespace strata::bench {
namespace {

// 32 Mi elements: every operand (64 MiB in bf16) well past a 32 MiB last-level cache.
constexpr int64_t kN = int64_t(1) << 25;

Stream& stream() { return bench_device().stream(); }

void elementwise_rows(Table& t, DType dt) {
  const double size = double(dtype_size(dt));
  const char* name = dtype_name(dt);
  {
    BenchTensor a(bench_device(), dt, {kN}), b(bench_device(), dt, {kN}), out(bench_device(), dt, {kN});
    bandwidth_row(t, "add", name, kN, 3 * size * kN, [&] { ops::add({out.view(), a.view(), b.view()}, stream()); });
    bandwidth_row(t, "scale", name, kN, 2 * size * kN,
                  [&] { ops::scale({out.view(), a.view(), 0.5f}, stream()); });
    // in place, as gradient accumulation runs; values grow by at most 1 a run
    bandwidth_row(t, "accumulate", std::string(name) + " += " + name, kN, 3 * size * kN,
                  [&] { ops::accumulate({out.view(), a.view()}, stream()); });
    bandwidth_row(t, "fill_zero", name, kN, size * kN, [&] { ops::fill_zero(out.view(), stream()); });
  }
  if (dt != DType::f32) {
    BenchTensor wide(bench_device(), DType::f32, {kN}), narrow(bench_device(), dt, {kN});
    const double bytes = (4 + size) * kN;
    bandwidth_row(t, "cast", std::string("f32 -> ") + name, kN, bytes,
                  [&] { ops::cast({narrow.view(), wide.view()}, stream()); });
    bandwidth_row(t, "cast", std::string(name) + " -> f32", kN, bytes,
                  [&] { ops::cast({wide.view(), narrow.view()}, stream()); });
    // gradient accumulation across micro-batches: f32 sums of 16-bit gradients
    bandwidth_row(t, "accumulate", std::string("f32 += ") + name, kN, (8 + size) * kN,
                  [&] { ops::accumulate({wide.view(), narrow.view()}, stream()); });
  }
}

void adamw_rows(Table& t) {
  BenchTensor master(bench_device(), DType::f32, {kN}), grad(bench_device(), DType::f32, {kN});
  BenchTensor m(bench_device(), DType::f32, {kN}, 0.0f, 0.1f), v(bench_device(), DType::f32, {kN}, 0.0f, 0.1f);
  for (DType working : {DType::i32, DType::f32, DType::bf16}) {  // i32 stands for "none"
    bool none = working == DType::i32;
    BenchTensor w(bench_device(), none ? DType::f32 : working, {none ? 1 : kN});
    ops::AdamWArgs a;
    a.master = master.view();
    a.grad = grad.view();
    a.m = m.view();
    a.v = v.view();
    a.working = none ? TensorView{} : w.view();
    a.weight_decay = 0.1f;
    // reads master, grad, m, v; writes master, m, v and the working copy
    double bytes = 28.0 * kN + (none ? 0.0 : double(dtype_size(working)) * kN);
    bandwidth_row(t, "adamw_step", none ? "f32, no working copy" : std::string("f32, working ") + dtype_name(working),
                  kN, bytes, [&] { ops::adamw_step(a, stream()); });
  }
}

void bench_elementwise() {
  Table t = bandwidth_table();
  elementwise_rows(t, DType::f32);
  elementwise_rows(t, DType::bf16);
  adamw_rows(t);
  t.print("elementwise ops and adamw_step vs memcpy");
}

STRATA_BENCH("elementwise", bench_elementwise);

}  // namespace
}  // namespace strata::bench
