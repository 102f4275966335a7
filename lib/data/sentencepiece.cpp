// SentencePiece models for strata::Tokenizer: load, encode, and the id -> text table
// decode uses (see sentencepiece.h for the invariant).
#include "lib/data/sentencepiece.h"

#include <sentencepiece_processor.h>

#include "strata/error.h"

namespace strata::sentencepiece {

struct Model {
  ::sentencepiece::SentencePieceProcessor processor;
};

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// "<0x0A>" -> the byte 0x0A (byte-fallback pieces).
std::string byte_piece(const std::string& piece) {
  return std::string(1, char(std::stoi(piece.substr(3, 2), nullptr, 16)));
}

std::string piece_text(const std::string& piece) {
  std::string text;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpace.size(), kSpace) == 0) {
      text += ' ';
      i += kSpace.size();
    } else {
      text += piece[i++];
    }
  }
  return text;
}

std::optional<uint32_t> id_or_none(int id) {
  return id < 0 ? std::nullopt : std::optional<uint32_t>(uint32_t(id));
}

}  // namespace

bool looks_like_model(std::string_view bytes) {
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  return first == std::string_view::npos || bytes[first] != '{';
}

Loaded load(std::string_view bytes, const std::string& name) {
  auto model = std::make_shared<Model>();
  const auto status = model->processor.LoadFromSerializedProto(bytes);
  STRATA_CHECK(status.ok(), name << ": neither a Hugging Face tokenizer.json (it does not start "
                                    "with '{') nor a SentencePiece model (sentencepiece: "
                                 << status.ToString()
                                 << "); give a tokenizer.json or a tokenizer.model");
  const auto& p = model->processor;
  Loaded out;
  const int n = p.GetPieceSize();
  out.id_bytes.resize(size_t(n));
  out.id_special.resize(size_t(n));
  for (int id = 0; id < n; ++id) {
    const std::string& piece = p.IdToPiece(id);
    const bool special = p.IsControl(id) || p.IsUnknown(id);
    out.id_special[size_t(id)] = special;
    out.id_bytes[size_t(id)] = special ? piece : p.IsByte(id) ? byte_piece(piece) : piece_text(piece);
  }
  out.bos = id_or_none(p.bos_id());
  out.eos = id_or_none(p.eos_id());
  out.unk = id_or_none(p.unk_id());
  // The normalizer spec is not exposed without protobuf headers: probe it instead. A
  // model that adds a dummy prefix encodes "a" as a piece starting with a space.
  std::vector<int> probe;
  if (p.Encode("a", &probe).ok() && !probe.empty())
    out.strip_leading_space = p.IdToPiece(probe[0]).starts_with(kSpace);
  out.model = std::move(model);
  return out;
}

void encode(const Model& model, std::string_view text, std::vector<uint32_t>& out,
            const std::string& name) {
  std::vector<int> ids;
  const auto status = model.processor.Encode(text, &ids);
  STRATA_CHECK(status.ok(), name << ": SentencePiece could not encode the text ("
                                 << status.ToString() << ")");
  out.insert(out.end(), ids.begin(), ids.end());
}

std::optional<uint32_t> piece_to_id(const Model& model, std::string_view piece) {
  const int id = model.processor.PieceToId(piece);
  if (id < 0 || model.processor.IdToPiece(id) != piece) return std::nullopt;
  return uint32_t(id);
}

}  // namespace strata::sentencepiece
