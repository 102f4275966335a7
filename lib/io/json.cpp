// JSON values, the writer and a bounded recursive-descent parser (see json.h).
// Invariant: the parser never reads past the end of its input and never recurses
// deeper than kMaxDepth, whatever the bytes; every failure is a strata::Error.
#include "json.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

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

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& what) : s_(text), what_(what) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (pos_ != s_.size()) fail("unexpected bytes after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) {
    STRATA_FAIL(what_ << ": malformed JSON at byte " << pos_ << ": " << why);
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  char peek() {
    if (pos_ >= s_.size()) fail("unexpected end of input");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 64 levels");
    skip_space();
    const char c = peek();
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value::string(string_body());
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    if (literal("true")) return Value::boolean(true);
    if (literal("false")) return Value::boolean(false);
    if (literal("null")) return Value();
    fail(std::string("unexpected character '") + (c >= 0x20 && c < 0x7f ? std::string(1, c) : "?") + "'");
  }

  Value object(int depth) {
    expect('{');
    Value v = Value::object();
    skip_space();
    if (peek() == '}') {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_space();
      if (peek() != '"') fail("expected a string key");
      std::string key = string_body();
      if (v.find(key)) fail("duplicate key \"" + key + "\"");
      skip_space();
      expect(':');
      v.set(key, value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      return v;
    }
  }

  Value array(int depth) {
    expect('[');
    Value v = Value::array();
    skip_space();
    if (peek() == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      v.push(value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return v;
    }
  }

  Value number() {
    const size_t start = pos_;
    auto digits = [&] {
      size_t n = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_, ++n;
      return n;
    };
    if (s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0') ++pos_;
    else if (digits() == 0) fail("a number needs digits");
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) fail("a number needs digits after '.'");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) fail("a number needs digits in its exponent");
    }
    return Value::number_text(std::string(s_.substr(start, pos_ - start)));
  }

  unsigned hex4() {
    unsigned x = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = peek();
      ++pos_;
      x <<= 4;
      if (c >= '0' && c <= '9') x |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') x |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') x |= unsigned(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return x;
  }

  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }

  std::string string_body() {
    expect('"');
    std::string out;
    for (;;) {
      const char c = peek();
      ++pos_;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character inside a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (!literal("\\u")) fail("unpaired surrogate in \\u escape");
            const unsigned lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) fail("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            fail("unpaired surrogate in \\u escape");
          }
          utf8(out, cp);
          break;
        }
        default: fail("bad escape in a string");
      }
    }
  }

  std::string_view s_;
  const std::string& what_;
  size_t pos_ = 0;
};

}  // namespace

Value parse(std::string_view text, const std::string& what) { return Parser(text, what).document(); }

}  // namespace strata::json
