// SafetensorsCheckpoint: one safetensors file or a sharded Hugging Face checkpoint
// (model.safetensors.index.json's weight_map -> shard files), read tensor by tensor;
// SafetensorsShardedWriter writes one.
// Invariant: the index and every shard header are validated when opened — each named
// shard exists and holds the tensors the index gives it — and no shard's data is read
// until a tensor is asked for (each read is one pread range of one shard).
#include <cstdio>
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

namespace strata {

namespace {

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

}  // namespace

SafetensorsShardedWriter::SafetensorsShardedWriter(const std::string& dir, std::vector<SafetensorsEntry> tensors,
                                                   const std::map<std::string, std::string>& metadata,
                                                   uint64_t max_shard_bytes)
    : dir_(dir), metadata_(metadata) {
  STRATA_CHECK(!tensors.empty(), "SafetensorsShardedWriter: no tensors for " << dir);
  // Tensors in order, a new shard when the next would pass the limit (a tensor larger
  // than the limit gets a shard of its own), as transformers' max_shard_size does.
  uint64_t bytes = 0;
  for (SafetensorsEntry& e : tensors) {
    const uint64_t n = uint64_t(e.numel()) * safetensors_dtype_size(e.dtype);
    total_bytes_ += n;
    if (groups_.empty() || (max_shard_bytes > 0 && bytes > 0 && bytes + n > max_shard_bytes)) {
      groups_.emplace_back();
      bytes = 0;
    }
    bytes += n;
    groups_.back().push_back(std::move(e));
  }
  // A stale single file or index would shadow (or contradict) what is written now.
  std::error_code ec;
  fs::remove(dir_ + "/" + (groups_.size() == 1 ? SafetensorsCheckpoint::kIndexName : "model.safetensors"), ec);
  open(0);
}

SafetensorsShardedWriter::~SafetensorsShardedWriter() = default;

std::string SafetensorsShardedWriter::file_name(size_t group) const {
  return groups_.size() == 1 ? "model.safetensors" : shard_name(group, groups_.size());
}

void SafetensorsShardedWriter::open(size_t group) {
  group_ = group;
  written_ = 0;
  writer_ = std::make_unique<SafetensorsWriter>(dir_ + "/" + file_name(group), groups_[group], metadata_);
}

void SafetensorsShardedWriter::write_converted(const TensorView& src) {
  if (written_ == groups_[group_].size()) {
    STRATA_CHECK(group_ + 1 < groups_.size(), "SafetensorsShardedWriter: more tensors written than declared");
    writer_->finish();
    open(group_ + 1);
  }
  writer_->write_converted(src);
  ++written_;
}

void SafetensorsShardedWriter::finish() {
  writer_->finish();
  if (groups_.size() == 1) return;
  json::Value map = json::Value::object();
  for (size_t g = 0; g < groups_.size(); ++g)
    for (const SafetensorsEntry& e : groups_[g]) map.set(e.name, json::Value::string(file_name(g)));
  json::Value meta = json::Value::object();
  meta.set("total_size", json::Value::unsigned_integer(total_bytes_));
  json::Value index = json::Value::object();
  index.set("metadata", std::move(meta));
  index.set("weight_map", std::move(map));
  const std::string path = dir_ + "/" + SafetensorsCheckpoint::kIndexName, temp = path + ".partial";
  std::error_code ec;
  fs::remove(temp, ec);
  io::write_file_synced(temp, index.dump(2) + "\n");
  fs::rename(temp, path, ec);
  STRATA_CHECK(!ec, "SafetensorsShardedWriter: cannot write " << path << ": " << ec.message());
}

}  // namespace strata
