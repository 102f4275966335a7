// safetensors reader and writer (see checkpoint.h for the format).
// Invariants: the reader trusts nothing in a file until the whole header has been
// validated — lengths, dtypes, shape x dtype size == byte range, ranges inside the
// data section, sorted ranges tiling it with no overlap or gap — and every size
// computation is overflow-checked. The writer's placeholder header has exactly the
// length of the final one (checksums are fixed-width hex), so it is patched in place.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "file_io.h"
#include "lib/core/host_convert.h"
#include "json.h"
#include "strata/checkpoint.h"

namespace strata {

namespace {
constexpr size_t kChunkBytes = size_t(4) << 20;  // streaming granularity
const std::string kCrcPrefix = "crc32c.";

std::string hex8(uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", x);
  return buf;
}

bool parse_hex8(const std::string& s, uint32_t& out) {
  if (s.size() != 8) return false;
  out = 0;
  for (char c : s) {
    out <<= 4;
    if (c >= '0' && c <= '9') out |= uint32_t(c - '0');
    else if (c >= 'a' && c <= 'f') out |= uint32_t(c - 'a' + 10);
    else return false;
  }
  return true;
}

uint64_t load_le64(const unsigned char* p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; --i) x = (x << 8) | p[i];
  return x;
}
}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t safetensors_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  STRATA_FAIL("unknown safetensors dtype \"" << d << "\"");
}

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
  }
  return "?";
}

// ---- reader -------------------------------------------------------------------------

struct SafetensorsReader::Impl {
  explicit Impl(const std::string& path) : file(path, io::File::Mode::read) {}
  io::File file;
  std::map<std::string, size_t> index;  // name -> position in tensors_
};

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  impl_ = std::make_unique<Impl>(path);
  file_bytes_ = impl_->file.size();
  const std::string what = path + ": safetensors header";
  STRATA_CHECK(file_bytes_ >= 8, what << ": the file has " << file_bytes_ << " bytes, fewer than the 8-byte length");
  unsigned char len[8];
  impl_->file.pread_all(len, 8, 0);
  header_bytes_ = load_le64(len);
  STRATA_CHECK(header_bytes_ <= kMaxHeaderBytes,
               what << ": declared length " << header_bytes_ << " exceeds the 100 MB limit; the file is corrupt");
  STRATA_CHECK(header_bytes_ <= file_bytes_ - 8,
               what << ": declared length " << header_bytes_ << " runs past the end of the " << file_bytes_
                    << "-byte file; the file is truncated or corrupt");
  STRATA_CHECK(header_bytes_ >= 2, what << ": declared length " << header_bytes_ << " is too short for a JSON object");
  std::string text(size_t(header_bytes_), '\0');
  impl_->file.pread_all(text.data(), text.size(), 8);
  header_crc_ = crc32c(text.data(), text.size(), crc32c(len, 8));
  STRATA_CHECK(text[0] == '{', what << ": does not start with '{'");
  const json::Value header = json::parse(text, what);

  const uint64_t data_bytes = file_bytes_ - 8 - header_bytes_;
  for (const auto& [name, v] : header.members(what)) {
    if (name == "__metadata__") {
      for (const auto& [k, mv] : v.members(what + " __metadata__"))
        metadata_[k] = mv.as_string(what + " __metadata__ \"" + k + "\"");
      continue;
    }
    const std::string tw = what + ", tensor \"" + name + "\"";
    STRATA_CHECK(v.is_object(), tw << ": expected an object");
    for (const auto& [k, unused] : v.members(tw))
      STRATA_CHECK(k == "dtype" || k == "shape" || k == "data_offsets", tw << ": unexpected key \"" << k << "\"");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = v.at("dtype", tw).as_string(tw + " dtype");
    size_t elem = 0;
    try {
      elem = safetensors_dtype_size(e.dtype);
    } catch (const Error& err) {
      STRATA_FAIL(tw << ": " << err.what());
    }
    uint64_t bytes = elem;
    for (const json::Value& d : v.at("shape", tw).items(tw + " shape")) {
      const int64_t n = d.as_int(tw + " shape");
      STRATA_CHECK(n >= 0, tw << ": negative dimension " << n << " in its shape");
      STRATA_CHECK(n == 0 || bytes <= std::numeric_limits<uint64_t>::max() / uint64_t(n),
                   tw << ": its shape overflows 64-bit byte counts");
      bytes *= uint64_t(n);
      e.shape.push_back(n);
    }
    STRATA_CHECK(e.shape.size() <= 8, tw << ": " << e.shape.size() << " dimensions (at most 8 supported)");
    const auto& off = v.at("data_offsets", tw).items(tw + " data_offsets");
    STRATA_CHECK(off.size() == 2, tw << ": data_offsets must be [begin, end], got " << off.size() << " numbers");
    e.begin = off[0].as_uint(tw + " data_offsets");
    e.end = off[1].as_uint(tw + " data_offsets");
    STRATA_CHECK(e.begin <= e.end, tw << ": data_offsets [" << e.begin << ", " << e.end << "] are reversed");
    STRATA_CHECK(e.end <= data_bytes, tw << ": data_offsets [" << e.begin << ", " << e.end
                                         << "] run past the end of the data section (" << data_bytes
                                         << " bytes); the file is truncated or corrupt");
    STRATA_CHECK(e.end - e.begin == bytes, tw << ": " << e.dtype << " shape needs " << bytes
                                              << " bytes but data_offsets span " << e.end - e.begin);
    tensors_.push_back(std::move(e));
  }
  // Ranges must tile the data section: sorted, no overlap, no gap, nothing after.
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors_[a].begin != tensors_[b].begin ? tensors_[a].begin < tensors_[b].begin
                                                  : tensors_[a].end < tensors_[b].end;
  });
  uint64_t cursor = 0;
  const SafetensorsEntry* prev = nullptr;
  for (size_t i : order) {
    const SafetensorsEntry& e = tensors_[i];
    STRATA_CHECK(e.begin >= cursor, what << ": tensor \"" << e.name << "\" [" << e.begin << ", " << e.end
                                         << ") overlaps tensor \"" << (prev ? prev->name : "") << "\"");
    STRATA_CHECK(e.begin == cursor, what << ": bytes [" << cursor << ", " << e.begin
                                         << ") of the data section belong to no tensor");
    cursor = e.end;
    prev = &e;
  }
  STRATA_CHECK(cursor == data_bytes, what << ": " << data_bytes - cursor
                                          << " bytes after the last tensor belong to no tensor");
  std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < tensors_.size(); ++i) impl_->index[tensors_[i].name] = i;
  for (const auto& [k, val] : metadata_) {
    if (k.rfind(kCrcPrefix, 0) != 0) continue;
    uint32_t crc;
    STRATA_CHECK(parse_hex8(val, crc), what << ": checksum \"" << k << "\" is not 8 hex digits: \"" << val << "\"");
    STRATA_CHECK(find(k.substr(kCrcPrefix.size())), what << ": checksum for an unknown tensor, \"" << k << "\"");
  }
}

SafetensorsReader::~SafetensorsReader() = default;

const SafetensorsEntry* SafetensorsReader::find(const std::string& name) const {
  auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  STRATA_CHECK(e, path_ << ": no tensor named \"" << name << "\" (the file has " << tensors_.size() << " tensors)");
  return *e;
}

bool SafetensorsReader::stored_checksum(const std::string& name, uint32_t& crc) const {
  auto it = metadata_.find(kCrcPrefix + name);
  return it != metadata_.end() && parse_hex8(it->second, crc);
}

void SafetensorsReader::read_raw(const SafetensorsEntry& e, void* dst) const {
  const uint64_t bytes = e.end - e.begin;
  char* out = static_cast<char*>(dst);
  uint32_t crc = 0;
  for (uint64_t done = 0; done < bytes;) {
    const size_t n = size_t(std::min<uint64_t>(kChunkBytes, bytes - done));
    impl_->file.pread_all(out + done, n, data_offset() + e.begin + done);
    crc = crc32c(out + done, n, crc);
    done += n;
  }
  uint32_t want;
  if (stored_checksum(e.name, want))
    STRATA_CHECK(crc == want, path_ << ": tensor \"" << e.name << "\" fails its checksum (CRC32C " << hex8(crc)
                                    << ", stored " << hex8(want) << "); the file is corrupt");
}

void SafetensorsReader::read(const std::string& name, const TensorView& dst) const {
  io::require_host(dst, "SafetensorsReader::read");
  const SafetensorsEntry& e = entry(name);
  io::FloatFormat src_format;
  STRATA_CHECK(io::float_format(e.dtype, src_format),
               path_ << ": tensor \"" << name << "\" is " << e.dtype << "; only F64, F32, BF16 and F16 convert to "
                     << dtype_name(dst.dtype));
  STRATA_CHECK(dst.numel() == e.numel(), path_ << ": tensor \"" << name << "\" has " << e.numel()
                                               << " elements, the destination " << dst.str() << " has "
                                               << dst.numel());
  const io::FloatFormat dst_format = io::float_format(dst.dtype);
  if (src_format == dst_format) return read_raw(e, dst.data);
  // Chunks: raw bytes -> f32 -> destination format, checksumming the raw bytes.
  const size_t elem = io::format_size(src_format);
  const size_t chunk_elems = kChunkBytes / elem;
  std::vector<char> raw(std::min<size_t>(kChunkBytes, size_t(e.end - e.begin)));
  std::vector<float> f32(std::min<size_t>(chunk_elems, size_t(e.numel())));
  uint32_t crc = 0;
  char* out = static_cast<char*>(dst.data);
  const size_t out_elem = dtype_size(dst.dtype);
  for (size_t i = 0, n = size_t(e.numel()); i < n;) {
    const size_t k = std::min(chunk_elems, n - i);
    impl_->file.pread_all(raw.data(), k * elem, data_offset() + e.begin + i * elem);
    crc = crc32c(raw.data(), k * elem, crc);
    io::to_f32(raw.data(), src_format, f32.data(), k);
    io::from_f32(f32.data(), out + i * out_elem, dst_format, k);
    i += k;
  }
  uint32_t want;
  if (stored_checksum(e.name, want))
    STRATA_CHECK(crc == want, path_ << ": tensor \"" << e.name << "\" fails its checksum (CRC32C " << hex8(crc)
                                    << ", stored " << hex8(want) << "); the file is corrupt");
}

std::vector<float> SafetensorsReader::read_f32(const std::string& name) const {
  std::vector<float> out(size_t(entry(name).numel()));
  read(name, TensorView(out.data(), DType::f32, {int64_t(out.size())}));
  return out;
}

void SafetensorsReader::verify() const {
  std::vector<char> buf;
  for (const SafetensorsEntry& e : tensors_) {
    uint32_t want;
    if (!stored_checksum(e.name, want)) continue;
    uint32_t crc = 0;
    for (uint64_t done = 0, bytes = e.end - e.begin; done < bytes;) {
      const size_t n = size_t(std::min<uint64_t>(kChunkBytes, bytes - done));
      buf.resize(n);
      impl_->file.pread_all(buf.data(), n, data_offset() + e.begin + done);
      crc = crc32c(buf.data(), n, crc);
      done += n;
    }
    STRATA_CHECK(crc == want, path_ << ": tensor \"" << e.name << "\" fails its checksum (CRC32C " << hex8(crc)
                                    << ", stored " << hex8(want) << "); the file is corrupt");
  }
}

// ---- writer -------------------------------------------------------------------------

struct SafetensorsWriter::Impl {
  std::string path, temp;
  std::unique_ptr<io::File> file;
  std::vector<SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
  std::vector<uint32_t> crcs;
  uint64_t header_bytes = 0;  // padded JSON, without the 8-byte length
  size_t current = 0;  // tensor being written
  uint64_t written = 0;  // bytes of the data section written
  bool finished = false;

  std::string header(bool with_crcs) const {
    json::Value h = json::Value::object();
    json::Value meta = json::Value::object();
    for (const auto& [k, v] : metadata) meta.set(k, json::Value::string(v));
    for (size_t i = 0; i < tensors.size(); ++i)
      meta.set(kCrcPrefix + tensors[i].name, json::Value::string(with_crcs ? hex8(crcs[i]) : "00000000"));
    h.set("__metadata__", std::move(meta));
    for (const SafetensorsEntry& e : tensors) {
      json::Value t = json::Value::object();
      t.set("dtype", json::Value::string(e.dtype));
      json::Value shape = json::Value::array();
      for (int64_t d : e.shape) shape.push(json::Value::integer(d));
      t.set("shape", std::move(shape));
      json::Value off = json::Value::array();
      off.push(json::Value::unsigned_integer(e.begin));
      off.push(json::Value::unsigned_integer(e.end));
      t.set("data_offsets", std::move(off));
      h.set(e.name, std::move(t));
    }
    std::string s = h.dump();
    s.append((8 - s.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
    return s;
  }

  void skip_empty() {
    while (current < tensors.size() && written == tensors[current].end) ++current;
  }
};

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<SafetensorsEntry> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  w.path = path;
  w.temp = path + ".partial." + std::to_string(::getpid());
  w.metadata = metadata;
  uint64_t offset = 0;
  std::map<std::string, int> seen;
  for (SafetensorsEntry& e : tensors) {
    STRATA_CHECK(!e.name.empty() && e.name != "__metadata__" && !seen[e.name]++,
                 "SafetensorsWriter " << path << ": tensor name \"" << e.name << "\" is empty, reserved or repeated");
    uint64_t bytes = safetensors_dtype_size(e.dtype);
    for (int64_t d : e.shape) {
      STRATA_CHECK(d >= 0, "SafetensorsWriter " << path << ": tensor \"" << e.name << "\" has a negative dimension");
      bytes *= uint64_t(d);
    }
    e.begin = offset;
    e.end = offset += bytes;
  }
  for (const auto& [k, v] : metadata)
    STRATA_CHECK(k.rfind(kCrcPrefix, 0) != 0, "SafetensorsWriter: metadata key \"" << k << "\" is reserved");
  w.tensors = std::move(tensors);
  w.crcs.assign(w.tensors.size(), 0);
  const std::string h = w.header(false);
  w.header_bytes = h.size();
  w.file = std::make_unique<io::File>(w.temp, io::File::Mode::create);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(w.header_bytes >> (8 * i));
  w.file->pwrite_all(len, 8, 0);
  w.file->pwrite_all(h.data(), h.size(), 8);
  w.skip_empty();
}

SafetensorsWriter::~SafetensorsWriter() {
  if (impl_ && !impl_->finished) {
    impl_->file.reset();
    ::unlink(impl_->temp.c_str());
  }
}

void SafetensorsWriter::write(const void* data, size_t bytes) {
  Impl& w = *impl_;
  STRATA_CHECK(!w.finished, "SafetensorsWriter " << w.path << ": write after finish()");
  const uint64_t total = w.tensors.empty() ? 0 : w.tensors.back().end;
  STRATA_CHECK(w.written + bytes <= total, "SafetensorsWriter " << w.path << ": " << w.written + bytes
                                                                << " bytes written, more than the declared " << total);
  w.file->pwrite_all(data, bytes, 8 + w.header_bytes + w.written);
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    SafetensorsEntry& e = w.tensors[w.current];
    const size_t n = size_t(std::min<uint64_t>(bytes, e.end - w.written));
    w.crcs[w.current] = crc32c(p, n, w.crcs[w.current]);
    p += n;
    bytes -= n;
    w.written += n;
    w.skip_empty();
  }
}

void SafetensorsWriter::write_converted(const TensorView& src) {
  Impl& w = *impl_;
  io::require_host(src, "SafetensorsWriter::write_converted");
  STRATA_CHECK(w.current < w.tensors.size() && w.written == w.tensors[w.current].begin,
               "SafetensorsWriter " << w.path << ": write_converted must start at a tensor's first byte");
  const SafetensorsEntry& e = w.tensors[w.current];
  STRATA_CHECK(src.numel() == e.numel(), "SafetensorsWriter " << w.path << ": tensor \"" << e.name << "\" has "
                                                              << e.numel() << " elements, the source " << src.str());
  io::FloatFormat out_format;
  STRATA_CHECK(io::float_format(e.dtype, out_format) && out_format != io::FloatFormat::f64,
               "SafetensorsWriter: cannot convert into " << e.dtype);
  const io::FloatFormat in_format = io::float_format(src.dtype);
  if (in_format == out_format) return write(src.data, src.nbytes());
  const size_t chunk = kChunkBytes / 4;
  std::vector<float> f32(std::min<size_t>(chunk, size_t(src.numel())));
  std::vector<char> out(f32.size() * io::format_size(out_format));
  const char* in = static_cast<const char*>(src.data);
  for (size_t i = 0, n = size_t(src.numel()); i < n;) {
    const size_t k = std::min(chunk, n - i);
    io::to_f32(in + i * dtype_size(src.dtype), in_format, f32.data(), k);
    io::from_f32(f32.data(), out.data(), out_format, k);
    write(out.data(), k * io::format_size(out_format));
    i += k;
  }
}

void SafetensorsWriter::finish() {
  Impl& w = *impl_;
  STRATA_CHECK(!w.finished, "SafetensorsWriter " << w.path << ": finish() called twice");
  const uint64_t total = w.tensors.empty() ? 0 : w.tensors.back().end;
  STRATA_CHECK(w.written == total, "SafetensorsWriter " << w.path << ": finish() after " << w.written << " of "
                                                        << total << " data bytes");
  const std::string h = w.header(true);
  STRATA_CHECK(h.size() == w.header_bytes, "SafetensorsWriter: the final header changed length");
  w.file->pwrite_all(h.data(), h.size(), 8);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(w.header_bytes >> (8 * i));
  header_crc_ = crc32c(h.data(), h.size(), crc32c(len, 8));
  w.file->fsync();
  w.file->close();
  STRATA_CHECK(::rename(w.temp.c_str(), w.path.c_str()) == 0,
               "cannot rename " << w.temp << " to " << w.path << ": " << detail::errno_string());
  io::fsync_dir(io::parent_dir(w.path));
  w.finished = true;
}

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsEntry> entries;
  for (const NamedTensor& t : tensors) {
    io::require_host(t.view, "save_safetensors");
    SafetensorsEntry e;
    e.name = t.name;
    e.dtype = safetensors_dtype_name(t.view.dtype);
    for (int i = 0; i < t.view.ndim; ++i) e.shape.push_back(t.view.shape[i]);
    entries.push_back(std::move(e));
  }
  SafetensorsWriter w(path, std::move(entries), metadata);
  for (const NamedTensor& t : tensors) w.write(t.view.data, t.view.nbytes());
  w.finish();
}

}  // namespace strata
