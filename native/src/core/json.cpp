#include "json.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace kpig {

const Json* Json::find(const std::string& key) const {
  if (type != Type::Object) return nullptr;
  for (const auto& kv : object)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const char* json_type_name(Json::Type t) {
  switch (t) {
    case Json::Type::Null: return "null";
    case Json::Type::Bool: return "boolean";
    case Json::Type::Number: return "number";
    case Json::Type::String: return "string";
    case Json::Type::Array: return "array";
    case Json::Type::Object: return "object";
  }
  return "?";
}

namespace {

struct Parser {
  const char* s;
  size_t n;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void error(const std::string& what) const {
    throw std::runtime_error(what + " at byte " + std::to_string(i));
  }
  void ws() {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  }
  bool lit(const char* w) {
    size_t k = 0;
    while (w[k]) {
      if (i + k >= n || s[i + k] != w[k]) return false;
      k++;
    }
    i += k;
    return true;
  }
  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  uint32_t hex4() {
    if (i + 4 > n) error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else error("bad \\u escape");
    }
    return v;
  }
  std::string string() {
    // caller checked s[i] == '"'
    i++;
    std::string out;
    while (true) {
      if (i >= n) error("unterminated string");
      char c = s[i++];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= n) error("unterminated escape");
      char e = s[i++];
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
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < n && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default: error("bad escape");
      }
    }
    return out;
  }
  Json value() {
    if (++depth > 256) error("nesting too deep");
    ws();
    if (i >= n) error("unexpected end of text");
    Json v;
    char c = s[i];
    if (c == '{') {
      v.type = Json::Type::Object;
      i++;
      ws();
      if (i < n && s[i] == '}') {
        i++;
      } else {
        while (true) {
          ws();
          if (i >= n || s[i] != '"') error("expected a string key");
          std::string key = string();
          ws();
          if (i >= n || s[i] != ':') error("expected ':'");
          i++;
          v.object.emplace_back(std::move(key), value());
          ws();
          if (i < n && s[i] == ',') { i++; continue; }
          if (i < n && s[i] == '}') { i++; break; }
          error("expected ',' or '}'");
        }
      }
    } else if (c == '[') {
      v.type = Json::Type::Array;
      i++;
      ws();
      if (i < n && s[i] == ']') {
        i++;
      } else {
        while (true) {
          v.array.push_back(value());
          ws();
          if (i < n && s[i] == ',') { i++; continue; }
          if (i < n && s[i] == ']') { i++; break; }
          error("expected ',' or ']'");
        }
      }
    } else if (c == '"') {
      v.type = Json::Type::String;
      v.str = string();
    } else if (lit("true")) {
      v.type = Json::Type::Bool;
      v.boolean = true;
    } else if (lit("false")) {
      v.type = Json::Type::Bool;
    } else if (lit("null")) {
      v.type = Json::Type::Null;
    } else if (lit("NaN")) {  // Python's json.dump writes these
      v.type = Json::Type::Number;
      v.number = NAN;
    } else if (lit("Infinity")) {
      v.type = Json::Type::Number;
      v.number = INFINITY;
    } else if (lit("-Infinity")) {
      v.type = Json::Type::Number;
      v.number = -INFINITY;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t start = i;
      bool integer = true;
      if (s[i] == '-') i++;
      while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                       s[i] == '+' || s[i] == '-')) {
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') integer = false;
        i++;
      }
      std::string lit_text(s + start, i - start);
      char* end = nullptr;
      v.number = std::strtod(lit_text.c_str(), &end);
      if (end != lit_text.c_str() + lit_text.size()) {
        i = start;
        error("bad number");
      }
      v.type = Json::Type::Number;
      v.is_integer = integer;
    } else {
      error(std::string("unexpected character '") + c + "'");
    }
    depth--;
    return v;
  }
};

}  // namespace

Json Json::parse(const char* text, size_t len) {
  Parser p{text, len};
  Json v = p.value();
  p.ws();
  if (p.i != p.n) p.error("trailing characters after the JSON value");
  return v;
}

}  // namespace kpig
