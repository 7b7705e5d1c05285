// A small JSON reader for config.json, safetensors headers and index files. No third-party
// dependency in the core; errors carry the byte offset so messages can say where the file is bad.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kpig {

class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  bool is_integer = false;  // the literal had no fraction or exponent
  std::string str;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // insertion order kept

  bool is_null() const { return type == Type::Null; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_array() const { return type == Type::Array; }
  bool is_object() const { return type == Type::Object; }
  bool is_bool() const { return type == Type::Bool; }
  const Json* find(const std::string& key) const;

  // Throws std::runtime_error("... at byte N") on malformed text; callers add the file name.
  static Json parse(const char* text, size_t len);
};

const char* json_type_name(Json::Type t);

}  // namespace kpig
