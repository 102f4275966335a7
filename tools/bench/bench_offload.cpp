// strata-bench offload: offloaded training (working params, gradients and AdamW
// state all on NVMe) of a model whose compute outlasts its NVMe traffic, so the
// optimizer step can hide behind the next forward. Per step: time, compute, stall
// and stall %, transfer time (NVMe busy + tier copies) and the overlap fraction
// (1 - stall / transfer: the share of transfer time compute did not wait for), NVMe
// GB/s read and written over the step, and the background optimizer step's own
// streaming rate, held against fio's sequential figure on the
// same directory at the store's block size and queue depth (1 MiB, qd 32).
//   STRATA_BENCH_OFFLOAD_DIR    swap directory on a local drive (default /var/tmp)
//   STRATA_BENCH_OFFLOAD_MODEL  LAYERSxWIDTH (default 12x1024: 152M parameters)
//   STRATA_BENCH_OFFLOAD_BATCH  BxT tokens per step (default 32x128: one forward
//                               clearly outlasts the update's traffic here, the
//                               condition for hiding it; at 16x128 they are close)
//   STRATA_BENCH_OFFLOAD_STEPS  steps (default 4; step 1 has no update before it)
// Invariant: nothing is asserted; the first step, whose window holds no background
// update, is left out of the steady-state row.
#include <algorithm>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench.h"
#include "common/philox.h"
#include "strata/offload.h"
#include "strata/strata.h"

namespace strata::bench {
namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// "AxB" -> (A, B).
std::pair<int64_t, int64_t> pair_of(const std::string& name, const std::string& text) {
  const size_t x = text.find('x');
  STRATA_CHECK(x != std::string::npos && x > 0 && x + 1 < text.size(),
               name << ": expected AxB (e.g. 12x1024), got '" << text << "'");
  return {std::stoll(text.substr(0, x)), std::stoll(text.substr(x + 1))};
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void bench_offload() {
  const std::string dir = env_or("STRATA_BENCH_OFFLOAD_DIR", "/var/tmp");
  const auto [layers, width] = pair_of("STRATA_BENCH_OFFLOAD_MODEL", env_or("STRATA_BENCH_OFFLOAD_MODEL", "12x1024"));
  const auto [B, T] = pair_of("STRATA_BENCH_OFFLOAD_BATCH", env_or("STRATA_BENCH_OFFLOAD_BATCH", "32x128"));
  const int steps = std::max(2, std::atoi(env_or("STRATA_BENCH_OFFLOAD_STEPS", "4").c_str()));

  ModelConfig c = ModelConfig::preset("demo");
  c.n_layers = layers;
  c.d_model = width;
  c.n_heads = std::max<int64_t>(1, width / 64);
  c.d_mlp = 4 * width;
  c.max_seq = std::max(c.max_seq, T);
  Model model(c, bench_device(), Precision::bf16, 1);
  model.set_recompute(RecomputePolicy::every_block(c.n_layers));
  TrainOptions to;
  to.adamw.lr = 1e-4f;
  to.schedule.kind = ScheduleKind::constant;
  offload::OffloadOptions off;
  off.params = off.grads = off.optimizer = offload::Tier::nvme;
  off.nvme_paths = {dir};
  off.pinned_bytes = size_t(512) << 20;
  const int64_t params = model.num_parameters();
  Trainer trainer(model, to, off);

  std::vector<int32_t> inputs(size_t(B * T)), targets(size_t(B * T));
  num::RandomKey key{7, 0, 0};
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = int32_t(num::philox_word(key, 2 * i) % uint32_t(c.vocab_size));
    targets[i] = int32_t(num::philox_word(key, 2 * i + 1) % uint32_t(c.vocab_size));
  }
  Batch batch{TensorView(inputs.data(), DType::i32, {B, T}), TensorView(targets.data(), DType::i32, {B, T})};

  Table t({"step", "time", "compute", "stall", "stall %", "transfer", "overlap", "read GB/s", "write GB/s", "update",
           "upd read GB/s", "upd write GB/s"});
  double sum_transfer = 0, sum_time = 0, sum_stall = 0, sum_update = 0, sum_upd_read = 0, sum_upd_write = 0, sum_read = 0, sum_write = 0;
  for (int s = 0; s < steps; ++s) {
    const StepReport r = trainer.train_step({batch});
    t.row({std::to_string(r.step), format_seconds(r.step_seconds), format_seconds(r.compute_seconds),
           format_seconds(r.io_stall_seconds), fixed(100 * r.io_stall_seconds / r.step_seconds, 1),
           format_seconds(r.transfer_seconds), fixed(100 * r.overlap_fraction, 1) + "%", fixed(r.nvme_read_gbps, 2), fixed(r.nvme_write_gbps, 2), format_seconds(r.update_seconds),
           fixed(r.update_read_gbps, 2), fixed(r.update_write_gbps, 2)});
    if (s == 0) continue;
    sum_time += r.step_seconds;
    sum_stall += r.io_stall_seconds;
    sum_transfer += r.transfer_seconds;
    sum_read += r.nvme_read_gbps * r.step_seconds;
    sum_write += r.nvme_write_gbps * r.step_seconds;
    sum_update += r.update_seconds;
    sum_upd_read += r.update_read_gbps * r.update_seconds;
    sum_upd_write += r.update_write_gbps * r.update_seconds;
  }
  const double upd_read = sum_update > 0 ? sum_upd_read / sum_update : 0;
  const double upd_write = sum_update > 0 ? sum_upd_write / sum_update : 0;
  t.row({"2-" + std::to_string(steps), format_seconds(sum_time / (steps - 1)), "", format_seconds(sum_stall / (steps - 1)),
         fixed(100 * sum_stall / sum_time, 1), format_seconds(sum_transfer / (steps - 1)),
         sum_transfer > 0 ? fixed(100 * std::clamp(1 - sum_stall / sum_transfer, 0.0, 1.0), 1) + "%" : "-",
         fixed(sum_read / sum_time, 2), fixed(sum_write / sum_time, 2),
         format_seconds(sum_update / (steps - 1)), fixed(upd_read, 2), fixed(upd_write, 2)});
  t.print("offload: " + std::to_string(layers) + " layers x " + std::to_string(width) + " (" +
          fixed(double(params) / 1e6, 0) + "M params, 16 B/param on NVMe in " + dir + "), bf16, B " +
          std::to_string(B) + " x T " + std::to_string(T) + ", recompute every block, " +
          std::to_string(num_threads()) + " threads; last row: steps 2.. (each hides the previous update)");

  // fio on the same directory, after training, at the store's transfer size and depth.
  const std::string file = dir + "/strata-bench-offload-fio-" + std::to_string(::getpid());
  const uint64_t size = uint64_t(1) << 30;
  const double fio_write = fio_pass(file, size, size_t(1) << 20, 32, true);
  const double fio_read = fio_write > 0 ? fio_pass(file, size, size_t(1) << 20, 32, false) : -1;
  ::unlink(file.c_str());
  if (fio_read <= 0 || fio_write <= 0) {
    std::printf("offload: fio not found or failing (apt install fio): no fio comparison\n");
    return;
  }
  Table f({"direction", "update GB/s", "fio GB/s", "update/fio"});
  f.row({"read", fixed(upd_read, 2), fixed(fio_read / 1e9, 2), format_ratio(upd_read * 1e9 / fio_read)});
  f.row({"write", fixed(upd_write, 2), fixed(fio_write / 1e9, 2), format_ratio(upd_write * 1e9 / fio_write)});
  f.print("offload: the background optimizer step's streaming (reads and writes at once) vs fio alone in each "
          "direction (io_uring, O_DIRECT, 1 MiB, qd 32, 1 GiB file in the same directory)");
}

}  // namespace

STRATA_BENCH("offload", bench_offload);

}  // namespace strata::bench
