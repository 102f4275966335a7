// The step loop of `strata train` (see train_loop.h).
#include "train_loop.h"

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>

#include "model_source.h"
#include "strata/dist.h"

namespace cli {

namespace {

float validate(strata::Trainer& trainer, strata::BatchLoader& val, int64_t batches) {
  val.reset();
  double sum = 0;
  const int64_t n = std::min(batches, val.num_batches());
  for (int64_t i = 0; i < n; ++i) {
    strata::TokenBatch b = val.next();
    sum += trainer.evaluate(b.batch());
  }
  return float(sum / double(n));
}

// What the ranks share: the agreed stop signal and the exit status.
struct Shared {
  explicit Shared(int ranks) : sync(ranks, Agree{this}) {}
  struct Agree {
    Shared* s;
    void operator()() noexcept { s->stop = stop_requested(); }
  };
  std::barrier<Agree> sync;
  int stop = 0;  // written by the barrier's completion only
  int status = 0;
};

// The CUDA device index `--device cuda[:N]` names (0 for plain "cuda"), or -1 for cpu.
int cuda_base(const std::string& spec) {
  if (spec == "cpu") return -1;
  return spec == "cuda" ? 0 : std::stoi(spec.substr(5));  // checked by make_device at parse time
}

// Rank r's device: simulated CPU device r, or GPU base + r (NCCL ranks).
std::unique_ptr<strata::Device> rank_device(const std::string& spec, int rank, bool ranked) {
  if (!ranked) return make_device(spec);
  const int base = cuda_base(spec);
  return base < 0 ? strata::Device::cpu(rank) : strata::Device::cuda(base + rank);
}

void train_rank(TrainJob& job, Shared& shared, int rank, int ranks, strata::dist::Comm* comm) {
  const bool lead = rank == 0;
  Output quiet(false, false);
  Output& out = lead ? *job.output : quiet;
  auto device = rank_device(job.device, rank, comm != nullptr);
  std::unique_ptr<strata::offload::OffloadOptions> off;
  if (offloaded(job.placement)) off = std::make_unique<strata::offload::OffloadOptions>(offload_options(job.placement));
  // Offloaded on one device, or sharded by ZeRO-3, the store initialises each unit
  // straight into its tier or shard: the model is never resident, so it may be larger
  // than RAM (or than one device).
  const bool deferred = comm ? job.options.zero_stage == 3 : off != nullptr;
  const auto init = deferred ? strata::Model::Init::deferred : strata::Model::Init::resident;
  strata::Model model(job.config, *device, job.precision, uint64_t(job.seed), init);
  std::unique_ptr<strata::Trainer> owner =
      comm ? (off ? std::make_unique<strata::Trainer>(model, job.options, *comm, *off)
                  : std::make_unique<strata::Trainer>(model, job.options, *comm))
      : off  ? std::make_unique<strata::Trainer>(model, job.options, *off)
             : std::make_unique<strata::Trainer>(model, job.options);
  strata::Trainer& trainer = *owner;
  if (job.init) load_weights(*job.init, model, &trainer);
  std::unique_ptr<strata::RunLog> log;
  if (lead) log = job.make_log(model);
  // Every rank reads the same global batch of ranks x batch rows and trains on its own.
  strata::LoaderOptions lo;
  lo.batch_size = job.batch * ranks;
  lo.seq_len = job.seq;
  lo.seed = uint64_t(job.seed);
  strata::BatchLoader loader(job.train_data, lo);
  std::unique_ptr<strata::BatchLoader> val;
  if (job.val_data) {
    lo.shuffle = false;
    lo.batch_size = job.batch;
    val = std::make_unique<strata::BatchLoader>(job.val_data, lo);
  }
  if (!job.resume.empty()) {
    strata::CheckpointInfo info = strata::load_checkpoint(job.resume, model, &trainer);
    loader.seek(info.progress.data_position);
  }
  const int64_t first_step = trainer.step_count();
  const auto t0 = std::chrono::steady_clock::now();
  auto save = [&] {
    strata::TrainingProgress progress{loader.position(), job.record};
    const strata::CheckpointOptions co{job.weights_dtype, true};
    std::string path = strata::checkpoint_path(job.out, trainer.step_count());
    if (lead) path = strata::save_run_checkpoint(job.out, model, trainer, progress, co, int(job.keep));
    else strata::save_checkpoint(path, model, &trainer, progress, co);  // takes part in the gathers only
    out.printf("saved %s\n", path.c_str());
    out.flush();
    return path;
  };
  const int64_t rows = job.batch * job.seq;
  int64_t last_saved = trainer.step_count();
  while (trainer.step_count() < job.steps) {
    std::vector<strata::TokenBatch> micro;
    std::vector<strata::Batch> views;
    for (int64_t k = 0; k < job.accum; ++k) micro.push_back(loader.next());
    for (auto& b : micro)
      views.push_back(strata::Batch{
          strata::TensorView(b.inputs.data() + rank * rows, strata::DType::i32, {job.batch, job.seq}),
          strata::TensorView(b.targets.data() + rank * rows, strata::DType::i32, {job.batch, job.seq})});
    const strata::StepReport r = trainer.train_step(views);
    shared.sync.arrive_and_wait();  // the ranks agree on shared.stop
    const int stop = shared.stop;
    std::vector<std::string> warnings;
    if (lead) warnings = log->record(r);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string bar = strata::progress_bar(r.step - first_step, job.steps - first_step, elapsed);
    const bool tty = out.tty();
    if (tty) out.printf("\r\033[K");
    // 9 significant digits: the float itself, so runs can be compared exactly.
    out.printf("step %lld/%lld | loss %.9g | lr %.3e | norm %.4f | %.0f tok/s | MFU %.1f%% | %s%s", (long long)r.step,
               (long long)job.steps, r.loss, r.lr, r.grad_norm, r.tokens_per_second * double(ranks), 100 * r.mfu,
               bar.c_str(), r.skipped ? " | skipped (non-finite gradients)" : "");
    const bool eval_now = val && job.eval_every > 0 && r.step % job.eval_every == 0 && !stop;
    const bool save_now = (job.save_every > 0 && r.step % job.save_every == 0) || stop;
    // On a terminal the line stays open for the next redraw unless something follows.
    if (!tty || !warnings.empty() || eval_now || save_now || r.step == job.steps) out.printf("\n");
    for (const std::string& w : warnings) out.printf("%s\n", w.c_str());
    if (eval_now) {
      const float vl = validate(trainer, *val, job.eval_batches);
      if (lead) log->record_eval(r.step, vl);
      out.printf("validation loss %.6f\n", vl);
    }
    out.flush();
    if (stop) {
      if (lead)
        std::fprintf(stderr, "strata train: %s: stopping after step %lld; saving a checkpoint (again to stop at once)\n",
                     signal_name(stop).c_str(), (long long)r.step);
      const std::string path = last_saved == r.step ? strata::latest_checkpoint(job.out) : save();
      if (lead)
        std::fprintf(stderr, "strata train: stopped at step %lld of %lld, checkpoint %s; run the same command to "
                     "resume\n", (long long)r.step, (long long)job.steps, path.c_str());
      shared.status = 128 + stop;
      return;
    }
    if (save_now) {
      save();
      last_saved = r.step;
    }
  }
  if (last_saved != trainer.step_count()) save();
  if (val) {
    const float vl = validate(trainer, *val, job.eval_batches);
    if (lead && (job.eval_every <= 0 || trainer.step_count() % job.eval_every != 0))
      log->record_eval(trainer.step_count(), vl);
    out.printf("validation loss %.6f\n", vl);
  }
}

}  // namespace

int run_training(TrainJob& job) {
  const bool ranked = job.placement.devices > 1 || job.placement.zero_stage > 0;
  const int ranks = int(job.placement.devices);
  Shared shared(ranks);
  if (!ranked) {
    train_rank(job, shared, 0, 1, nullptr);
    return shared.status;
  }
  auto rank_main = [&](int rank, strata::dist::Comm& comm) {
    try {
      train_rank(job, shared, rank, ranks, &comm);
    } catch (...) {
      shared.sync.arrive_and_drop();  // the others must not wait for this rank at the barrier
      throw;
    }
  };
  if (const int base = cuda_base(job.device); base >= 0) {
    // GPUs base .. base + ranks - 1, one NCCL communicator each (ncclCommInitAll).
    std::vector<int> gpus;
    for (int r = 0; r < ranks; ++r) gpus.push_back(base + r);
    std::vector<std::unique_ptr<strata::dist::Comm>> comms = strata::dist::make_nccl_comms(gpus);
    strata::dist::run_ranks(comms, rank_main);
  } else {
    strata::dist::run_ranks(ranks, rank_main);
  }
  return shared.status;
}

}  // namespace cli
