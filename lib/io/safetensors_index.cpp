// SafetensorsCheckpoint: one safetensors file or a sharded Hugging Face checkpoint
// (model.safetensors.index.json's weight_map -> shard files), read tensor by tensor.
// Invariant: the index and every shard header are validated when opened — each named
// shard exists and holds the tensors the index gives it — and no shard's data is read
// until a tensor is asked for (each read is one pread range of one shard).
#include <filesystem>

#include "file_io.h"
#include "json.h"
#include "strata/checkpoint.h"
#include "strata/error.h"

namespace strata {

namespace fs = std::filesystem;

std::string SafetensorsCheckpoint::resolve(const std::string& path) {
  if (!fs::is_directory(path)) return path;
  const std::string single = path + "/model.safetensors", index = path + "/" + kIndexName;
  if (fs::exists(single)) return single;
  STRATA_CHECK(fs::exists(index), path << ": holds neither model.safetensors nor " << kIndexName
                                       << "; give a Hugging Face checkpoint directory");
  return index;
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& path) : path_(resolve(path)) {
  if (!path_.ends_with(".index.json")) {
    files_.push_back(std::make_unique<SafetensorsReader>(path_));
    for (const SafetensorsEntry& e : files_[0]->tensors()) add(e, 0);
    return;
  }
  const json::Value index = json::parse(io::read_file(path_), path_);
  const std::string dir = fs::path(path_).parent_path().string();
  std::map<std::string, size_t> file_of;  // shard name -> index into files_
  for (const auto& [name, shard_value] : index.at("weight_map", path_).members(path_ + ": weight_map")) {
    const std::string& shard = shard_value.as_string(path_ + ": weight_map[\"" + name + "\"]");
    STRATA_CHECK(shard.find('/') == std::string::npos,
                 path_ << ": weight_map puts \"" << name << "\" in \"" << shard
                       << "\", which is not a file name beside the index");
    auto [it, fresh] = file_of.try_emplace(shard, files_.size());
    if (fresh) {
      const std::string shard_path = (dir.empty() ? "" : dir + "/") + shard;
      STRATA_CHECK(fs::exists(shard_path), path_ << ": weight_map names shard \"" << shard
                                                 << "\" (for \"" << name << "\"), which does not "
                                                 "exist; the checkpoint is incomplete");
      files_.push_back(std::make_unique<SafetensorsReader>(shard_path));
    }
    const SafetensorsEntry* e = files_[it->second]->find(name);
    STRATA_CHECK(e, path_ << ": weight_map puts \"" << name << "\" in \"" << shard
                          << "\", which has no such tensor; the checkpoint is inconsistent");
    add(*e, it->second);
  }
  STRATA_CHECK(!tensors_.empty(), path_ << ": weight_map is empty");
}

SafetensorsCheckpoint::~SafetensorsCheckpoint() = default;

void SafetensorsCheckpoint::add(const SafetensorsEntry& e, size_t file) {
  STRATA_CHECK(by_name_.emplace(e.name, tensors_.size()).second,
               path_ << ": tensor \"" << e.name << "\" appears twice");
  tensors_.push_back(e);
  file_index_.push_back(file);
}

const SafetensorsEntry* SafetensorsCheckpoint::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsReader& SafetensorsCheckpoint::file_of(const std::string& name) const {
  const auto it = by_name_.find(name);
  STRATA_CHECK(it != by_name_.end(), path_ << ": no tensor \"" << name << "\"");
  return *files_[file_index_[it->second]];
}

void SafetensorsCheckpoint::read(const std::string& name, const TensorView& dst) const {
  file_of(name).read(name, dst);
}

std::vector<float> SafetensorsCheckpoint::read_f32(const std::string& name) const {
  return file_of(name).read_f32(name);
}

}  // namespace strata
