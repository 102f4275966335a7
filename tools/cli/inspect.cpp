// `strata inspect`: what a checkpoint or safetensors file holds — config, trainer
// state, files, and every tensor's dtype, shape and stored checksum; --verify reads
// everything and checks every checksum.
// Invariant: read-only.
#include <cstdio>
#include <filesystem>

#include "args.h"
#include "commands.h"
#include "model_source.h"

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_tensors(const std::string& path, bool all_metadata) {
  strata::SafetensorsReader r(path);
  std::printf("%s: %zu tensors, %llu bytes, header CRC32C %08x\n", path.c_str(), r.tensors().size(),
              (unsigned long long)r.file_bytes(), r.header_crc32c());
  for (const auto& [k, v] : r.metadata())
    if (all_metadata || k.rfind("crc32c.", 0) != 0) std::printf("  metadata %s = %s\n", k.c_str(), v.c_str());
  for (const strata::SafetensorsEntry& e : r.tensors()) {
    uint32_t crc = 0;
    const bool has = r.stored_checksum(e.name, crc);
    char crc_text[16] = "-";
    if (has) std::snprintf(crc_text, sizeof crc_text, "%08x", crc);
    std::printf("  %-44s %-5s %-18s crc32c %s\n", e.name.c_str(), e.dtype.c_str(), shape_text(e.shape).c_str(), crc_text);
  }
}

}  // namespace

int inspect_main(int argc, char** argv) {
  std::vector<std::string> paths;
  bool verify = false, metadata = false;
  cli::Args args("strata inspect [--verify] PATH...",
                 "Shows a strata checkpoint (or a run directory's newest) or a safetensors file.");
  args.flag("verify", &verify, "read every tensor and check every checksum");
  args.flag("metadata", &metadata, "also list the per-tensor checksum metadata keys");
  args.positionals(&paths, "PATH...", "checkpoint directory, run directory or .safetensors file");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (paths.empty()) return args.usage_error("give a checkpoint directory or a safetensors file");
  try {
    for (std::string path : paths) {
      if (!std::filesystem::is_directory(path)) {
        print_tensors(path, metadata);
        if (verify) {
          strata::SafetensorsReader(path).verify();
          std::printf("verified: every tensor matches its checksum\n");
        }
        continue;
      }
      if (!strata::is_checkpoint(path)) {
        const std::vector<std::string> all = strata::list_checkpoints(path);
        if (all.empty()) throw strata::Error(path + " holds no complete strata checkpoint");
        std::printf("run %s: %zu checkpoints", path.c_str(), all.size());
        for (const auto& c : all) std::printf(" %s", std::filesystem::path(c).filename().c_str());
        std::printf("\n");
        path = all.back();
      }
      const strata::CheckpointInfo info = strata::read_checkpoint_info(path);
      std::printf("checkpoint %s\n  model: %s\n  precision: %s\n", path.c_str(), info.config.describe().c_str(),
                  strata::precision_name(info.precision));
      if (info.has_trainer) {
        const strata::TrainOptions& o = info.options;
        std::printf("  trainer: step %lld, loss scale %g, skipped steps %lld, data position %lld, seed %llu\n",
                    (long long)info.trainer.step, double(info.trainer.loss_scale), (long long)info.trainer.skipped_steps,
                    (long long)info.progress.data_position, (unsigned long long)o.seed);
        std::printf("  options: lr %g, betas (%g, %g), eps %g, weight decay %g, clip %g, accum %lld, "
                    "schedule warmup %lld / total %lld / min ratio %g\n",
                    double(o.adamw.lr), double(o.adamw.beta1), double(o.adamw.beta2), double(o.adamw.eps),
                    double(o.adamw.weight_decay), double(o.clip_norm), (long long)o.grad_accum,
                    (long long)o.schedule.warmup_steps, (long long)o.schedule.total_steps, double(o.schedule.min_ratio));
        for (const auto& [k, v] : info.progress.extra) std::printf("  %s: %s\n", k.c_str(), v.c_str());
      } else {
        std::printf("  weights only (no trainer state)\n");
      }
      for (const auto& [name, bytes] : info.files) std::printf("  file %-28s %12llu bytes\n", name.c_str(), (unsigned long long)bytes);
      for (const auto& [name, bytes] : info.files)
        if (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors") print_tensors(path + "/" + name, metadata);
      if (verify) {
        strata::verify_checkpoint(path);
        std::printf("verified: every file and tensor matches its checksum\n");
      }
    }
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("inspect", e);
  }
}
