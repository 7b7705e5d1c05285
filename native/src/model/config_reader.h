// Reading config.json: a reader whose errors name the file and the field, shared by the
// architectures (native/src/model/arch/) that each read their own fields.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "../../include/kpig/model.h"
#include "../core/json.h"

namespace kpig {

struct ConfigReader {
  const Json& j;
  std::string file;

  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    fail(ErrorCode::Config, file + ": field '" + field + "' " + what);
  }
  const Json* get(const char* name) const {
    const Json* v = j.find(name);
    return (v && !v->is_null()) ? v : nullptr;
  }
  int64_t integer(std::initializer_list<const char*> names, bool required, int64_t dflt, int64_t min = 1) const {
    for (const char* n : names) {
      if (const Json* v = get(n)) {
        if (!v->is_number() || !v->is_integer) bad(n, "must be an integer, got " + std::string(json_type_name(v->type)));
        if (v->number < double(min)) bad(n, "must be ≥ " + std::to_string(min) + ", got " + std::to_string(int64_t(v->number)));
        return int64_t(v->number);
      }
    }
    if (required) bad(*names.begin(), "is missing");
    return dflt;
  }
  double real(const char* name, double dflt) const {
    const Json* v = get(name);
    if (!v) return dflt;
    if (!v->is_number()) bad(name, "must be a number");
    if (!(v->number > 0)) bad(name, "must be positive");
    return v->number;
  }
  bool boolean(const char* name, bool dflt) const {
    const Json* v = get(name);
    if (!v) return dflt;
    if (!v->is_bool()) bad(name, "must be true or false");
    return v->boolean;
  }
  std::string string(const char* name, const std::string& dflt) const {
    const Json* v = get(name);
    if (!v) return dflt;
    if (!v->is_string()) bad(name, "must be a string");
    return v->str;
  }
  std::vector<int32_t> ids(const char* name) const {
    std::vector<int32_t> out;
    const Json* v = get(name);
    if (!v) return out;
    auto one = [&](const Json& x) {
      if (!x.is_number() || !x.is_integer || x.number < 0) bad(name, "must be a non-negative integer or a list of them");
      out.push_back(int32_t(x.number));
    };
    if (v->is_array()) for (const Json& x : v->array) one(x);
    else one(*v);
    return out;
  }
};


// RoPE from transformers 5's `rope_parameters` {rope_type, rope_theta, factor, …} or transformers
// 4's top-level `rope_theta` and `rope_scaling` {rope_type | type, factor, …}; inv_freq as
// transformers' modeling_rope_utils computes it. `dynamic` (NTK) rescales only past
// original_max_position_embeddings, which the engine's context never exceeds, so inside it equals
// the default. Any other type is refused by name rather than run as the default.
void rope_load(const ConfigReader& r, ModelConfig& c, const std::string& file);

}  // namespace kpig
