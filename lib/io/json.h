// A small JSON value, writer and parser for checkpoint metadata: trainer state,
// model configs, manifests, Hugging Face config.json and safetensors headers.
// Invariants: numbers keep their literal text, so 64-bit integers (seeds, offsets)
// round-trip exactly and a float written with 9 significant digits reads back as the
// same float; objects keep insertion order, so what we write is stable byte for byte.
// The parser is fed untrusted bytes (file headers): it bounds nesting depth and
// throws strata::Error, never crashes, on anything malformed.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata::json {

class Builder;

class Value {
 public:
  enum class Kind : uint8_t { null, boolean, number, string, array, object };

  Value() = default;
  static Value boolean(bool b);
  static Value number_text(std::string literal);  // already-valid JSON number text
  static Value string(std::string s);
  static Value array();
  static Value object();
  // Numbers, written so they read back exactly.
  static Value integer(int64_t x);
  static Value unsigned_integer(uint64_t x);
  static Value real(double x);  // 17 significant digits
  static Value real(float x);   // 9 significant digits

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_object() const { return kind_ == Kind::object; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const { return kind_ == Kind::number; }

  // Typed access; `what` names the value in the error ("config.json: n_layers").
  bool as_bool(const std::string& what) const;
  const std::string& as_string(const std::string& what) const;
  int64_t as_int(const std::string& what) const;
  uint64_t as_uint(const std::string& what) const;
  double as_double(const std::string& what) const;

  // Arrays.
  const std::vector<Value>& items(const std::string& what) const;
  Value& push(Value v);

  // Objects.
  const std::vector<std::pair<std::string, Value>>& members(const std::string& what) const;
  const Value* find(std::string_view key) const;  // nullptr when absent or not an object
  // The member, or an error naming `what` and the key.
  const Value& at(std::string_view key, const std::string& what) const;
  Value& set(const std::string& key, Value v);  // replaces an existing key

  // Compact when indent < 0, otherwise pretty with that many spaces per level.
  std::string dump(int indent = -1) const;

 private:
  friend class Builder;  // the parser fills containers directly (no per-key search)
  void write(std::string& out, int indent, int level) const;
  Kind kind_ = Kind::null;
  bool bool_ = false;
  std::string text_;  // string value, or the literal text of a number
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> members_;
};

// Parses exactly one JSON value (surrounding whitespace allowed). `what` prefixes
// every error ("safetensors header of model.safetensors"), which also gives the byte
// offset of the problem.
Value parse(std::string_view text, const std::string& what);

// JSON string literal of s, with quotes and escapes.
std::string quote(std::string_view s);

}  // namespace strata::json
