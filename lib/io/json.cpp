// JSON values, the writer, and the parser: nlohmann-json's (iterative, strict) SAX
// parser feeding a builder that keeps number literals and key order (see json.h).
// Invariant: parsing is linear in the input — duplicate keys are found through a
// hash set per open object — and never nests deeper than kMaxDepth, whatever the
// bytes; every failure is a strata::Error.
#include "json.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "strata/error.h"

namespace strata::json {

namespace {
constexpr int kMaxDepth = 64;

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::null: return "null";
    case Value::Kind::boolean: return "a boolean";
    case Value::Kind::number: return "a number";
    case Value::Kind::string: return "a string";
    case Value::Kind::array: return "an array";
    case Value::Kind::object: return "an object";
  }
  return "?";
}
}  // namespace

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::boolean;
  v.bool_ = b;
  return v;
}
Value Value::number_text(std::string literal) {
  Value v;
  v.kind_ = Kind::number;
  v.text_ = std::move(literal);
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::string;
  v.text_ = std::move(s);
  return v;
}
Value Value::array() {
  Value v;
  v.kind_ = Kind::array;
  return v;
}
Value Value::object() {
  Value v;
  v.kind_ = Kind::object;
  return v;
}
Value Value::integer(int64_t x) { return number_text(std::to_string(x)); }
Value Value::unsigned_integer(uint64_t x) { return number_text(std::to_string(x)); }
Value Value::real(double x) {
  STRATA_CHECK(std::isfinite(x), "json: cannot write the non-finite number " << x);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return number_text(buf);
}
Value Value::real(float x) {
  STRATA_CHECK(std::isfinite(x), "json: cannot write the non-finite number " << x);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", double(x));
  return number_text(buf);
}

bool Value::as_bool(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::boolean, what << ": expected a boolean, found " << kind_name(kind_));
  return bool_;
}
const std::string& Value::as_string(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::string, what << ": expected a string, found " << kind_name(kind_));
  return text_;
}
int64_t Value::as_int(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::number, what << ": expected an integer, found " << kind_name(kind_));
  int64_t x = 0;
  auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), x);
  STRATA_CHECK(ec == std::errc() && end == text_.data() + text_.size(),
               what << ": expected an integer in the int64 range, found " << text_);
  return x;
}
uint64_t Value::as_uint(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::number, what << ": expected an unsigned integer, found " << kind_name(kind_));
  uint64_t x = 0;
  auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), x);
  STRATA_CHECK(ec == std::errc() && end == text_.data() + text_.size(),
               what << ": expected an unsigned integer in the uint64 range, found " << text_);
  return x;
}
double Value::as_double(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::number, what << ": expected a number, found " << kind_name(kind_));
  return std::strtod(text_.c_str(), nullptr);
}

const std::vector<Value>& Value::items(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::array, what << ": expected an array, found " << kind_name(kind_));
  return items_;
}
Value& Value::push(Value v) {
  STRATA_CHECK(kind_ == Kind::array, "json: push on " << kind_name(kind_));
  items_.push_back(std::move(v));
  return items_.back();
}

const std::vector<std::pair<std::string, Value>>& Value::members(const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::object, what << ": expected an object, found " << kind_name(kind_));
  return members_;
}
const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::object) return nullptr;
  for (const auto& [k, v] : members_)
    if (k == key) return &v;
  return nullptr;
}
const Value& Value::at(std::string_view key, const std::string& what) const {
  STRATA_CHECK(kind_ == Kind::object, what << ": expected an object, found " << kind_name(kind_));
  const Value* v = find(key);
  STRATA_CHECK(v, what << ": missing the key \"" << key << "\"");
  return *v;
}
Value& Value::set(const std::string& key, Value v) {
  STRATA_CHECK(kind_ == Kind::object, "json: set on " << kind_name(kind_));
  for (auto& [k, old] : members_)
    if (k == key) return old = std::move(v);
  members_.emplace_back(key, std::move(v));
  return members_.back().second;
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

void Value::write(std::string& out, int indent, int level) const {
  auto newline = [&](int l) {
    if (indent < 0) return;
    out += '\n';
    out.append(size_t(indent * l), ' ');
  };
  switch (kind_) {
    case Kind::null: out += "null"; return;
    case Kind::boolean: out += bool_ ? "true" : "false"; return;
    case Kind::number: out += text_; return;
    case Kind::string: out += quote(text_); return;
    case Kind::array:
      out += '[';
      for (size_t i = 0; i < items_.size(); ++i) {
        if (i) out += indent < 0 ? "," : ", ";
        items_[i].write(out, -1, 0);  // arrays stay on one line: shapes, offsets
      }
      out += ']';
      return;
    case Kind::object:
      out += '{';
      for (size_t i = 0; i < members_.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        out += quote(members_[i].first);
        out += indent < 0 ? ":" : ": ";
        members_[i].second.write(out, indent, level + 1);
      }
      if (!members_.empty()) newline(level);
      out += '}';
      return;
  }
}

std::string Value::dump(int indent) const {
  std::string out;
  write(out, indent, 0);
  return out;
}

// ---- parser ---------------------------------------------------------------------

// nlohmann's ordered_json is not used as the tree: its ordered_map finds keys by a
// linear scan (quadratic on a 100,000-key header) and it keeps numbers as doubles.
class Builder : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit Builder(const std::string& what) : what_(what) {}

  bool null() override { return add(Value()); }
  bool boolean(bool b) override { return add(Value::boolean(b)); }
  bool number_integer(number_integer_t x) override { return add(Value::integer(x)); }
  bool number_unsigned(number_unsigned_t x) override { return add(Value::unsigned_integer(x)); }
  bool number_float(number_float_t, const string_t& literal) override { return add(Value::number_text(literal)); }
  bool string(string_t& s) override { return add(Value::string(std::move(s))); }
  bool binary(binary_t&) override { return fail("binary values are not JSON"); }
  bool start_object(std::size_t) override { return open(Value::object()); }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) return fail("duplicate key \"" + k + "\"");
    pending_key_.push_back(std::move(k));
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(Value::array()); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    // nlohmann's position counts the byte it stopped at from 1.
    error_ = "malformed JSON at byte " + std::to_string(position ? position - 1 : 0) + ": " + e.what();
    return false;
  }

  Value take_root() { return std::move(root_); }
  const std::string& error() const { return error_; }

 private:
  bool fail(const std::string& why) {
    error_ = why;
    return false;
  }
  bool open(Value container) {
    if (stack_.size() >= size_t(kMaxDepth)) return fail("nesting deeper than 64 levels");
    stack_.push_back(std::move(container));
    keys_.emplace_back();
    return true;
  }
  bool close() {
    Value done = std::move(stack_.back());
    stack_.pop_back();
    keys_.pop_back();
    return add(std::move(done));
  }
  bool add(Value v) {
    if (stack_.empty()) {
      root_ = std::move(v);
    } else if (stack_.back().is_array()) {
      stack_.back().items_.push_back(std::move(v));
    } else {
      stack_.back().members_.emplace_back(std::move(pending_key_.back()), std::move(v));
      pending_key_.pop_back();
    }
    return true;
  }

  const std::string& what_;
  Value root_;
  std::vector<Value> stack_;  // the open containers, innermost last
  std::vector<std::unordered_set<std::string>> keys_;  // keys seen per open container
  std::vector<std::string> pending_key_;  // a key awaiting its value, per open object
  std::string error_;
};

Value parse(std::string_view text, const std::string& what) {
  Builder builder(what);
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &builder, nlohmann::json::input_format_t::json,
                                            /*strict=*/true, /*ignore_comments=*/false);
  STRATA_CHECK(ok, what << ": " << (builder.error().empty() ? "malformed JSON" : builder.error()));
  return builder.take_root();
}

}  // namespace strata::json
