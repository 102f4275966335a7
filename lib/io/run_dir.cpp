// A run directory: checkpoints step_00000123, the newest K kept.
// Invariants: a checkpoint is never modified once renamed into place; removal first
// renames it to a dot-name (atomic), so a crash mid-delete never leaves a
// half-deleted directory under a checkpoint's name. Dot-names (.tmp-*, .trash-*)
// are leftovers of interrupted saves or deletes and are never loaded.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "file_io.h"
#include "strata/checkpoint.h"
#include "strata/error.h"

namespace strata {

namespace {
namespace fs = std::filesystem;

// step from "step_00000123"; -1 when the name is not a checkpoint's.
int64_t step_of(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step_") != 0) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (int64_t(1) << 58)) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

void remove_dir(const std::string& run_dir, const std::string& name) {
  const std::string trash = run_dir + "/.trash-" + name + "-" + std::to_string(::getpid());
  std::error_code ec;
  if (name[0] == '.') {
    fs::remove_all(run_dir + "/" + name, ec);
    return;
  }
  fs::rename(run_dir + "/" + name, trash, ec);
  if (!ec) fs::remove_all(trash, ec);
}
}  // namespace

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return run_dir + "/" + name;
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = step_of(name);
    if (step >= 0 && is_checkpoint(entry.path().string())) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::string latest_checkpoint(const std::string& run_dir) {
  std::vector<std::string> all = list_checkpoints(run_dir);
  return all.empty() ? std::string() : all.back();
}

std::string save_run_checkpoint(const std::string& run_dir, const Model& model, const Trainer& trainer,
                                const TrainingProgress& progress, const CheckpointOptions& options,
                                int keep_last) {
  STRATA_CHECK(keep_last >= 0, "save_run_checkpoint: keep_last " << keep_last << " must be non-negative");
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  STRATA_CHECK(!ec, "save_run_checkpoint: cannot create " << run_dir << ": " << ec.message());
  // Leftovers of interrupted saves and deletes (one writer per run directory).
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0 || name.rfind(".trash-", 0) == 0) remove_dir(run_dir, name);
  }
  const std::string path = checkpoint_path(run_dir, trainer.step_count());
  const std::string name = path.substr(run_dir.size() + 1);
  if (fs::exists(path)) {
    // The same step saved again (a resumed run saving where it started, or an
    // incomplete directory): move the old one aside only once the new one is written.
    const std::string fresh = run_dir + "/.tmp-" + name + "-replacement-" + std::to_string(::getpid());
    fs::remove_all(fresh, ec);
    save_checkpoint(fresh, model, &trainer, progress, options);
    remove_dir(run_dir, name);
    STRATA_CHECK(::rename(fresh.c_str(), path.c_str()) == 0,
                 "save_run_checkpoint: cannot rename " << fresh << " to " << path << ": " << detail::errno_string());
    io::fsync_dir(run_dir);
  } else {
    save_checkpoint(path, model, &trainer, progress, options);
  }
  if (keep_last > 0) {
    std::vector<std::string> all = list_checkpoints(run_dir);
    for (size_t i = 0; i + size_t(keep_last) < all.size(); ++i)
      remove_dir(run_dir, fs::path(all[i]).filename().string());
  }
  return path;
}

}  // namespace strata
