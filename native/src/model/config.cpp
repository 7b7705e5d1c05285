// config.json → ModelConfig: the common fields here, the family's own fields by its architecture
// (arch/), and RoPE as transformers computes it.
#include <cmath>
#include <fstream>
#include <sstream>

#include "../../include/kpig/model.h"
#include "../core/json.h"
#include "arch.h"
#include "config_reader.h"

namespace kpig {

namespace {

// A positive number field of a JSON object (rope parameters), or `dflt` when absent (NaN: required).
double rope_number(const Json& o, const char* name, double dflt, const std::string& where) {
  const Json* v = o.find(name);
  if (!v || v->is_null()) {
    if (std::isnan(dflt)) fail(ErrorCode::Config, where + ": field '" + name + "' is missing");
    return dflt;
  }
  if (!v->is_number() || !(v->number > 0)) fail(ErrorCode::Config, where + ": field '" + name + "' must be a positive number");
  return v->number;
}

}  // namespace

void rope_load(const ConfigReader& r, ModelConfig& c, const std::string& file) {
  const Json* params = r.get("rope_parameters");
  const Json* scaling = r.get("rope_scaling");
  if (params && !params->is_object()) r.bad("rope_parameters", "must be an object");
  if (scaling && !scaling->is_object()) r.bad("rope_scaling", "must be an object or null");
  const std::string where = file + (params ? ": rope_parameters" : ": rope_scaling");
  const Json* src = params ? params : scaling;
  c.rope_theta = params ? rope_number(*params, "rope_theta", r.real("rope_theta", 10000.0), where) : r.real("rope_theta", 10000.0);
  std::string type = "default";
  if (src) {
    const Json* t = src->find("rope_type");
    if (!t || t->is_null()) t = src->find("type");
    if (t && !t->is_null()) {
      if (!t->is_string()) fail(ErrorCode::Config, where + ": field 'rope_type' must be a string");
      type = t->str;
    }
  }
  for (const Json* p : {src ? src->find("partial_rotary_factor") : nullptr, r.get("partial_rotary_factor")})
    if (p && !p->is_null() && !(p->is_number() && p->number == 1.0))
      fail(ErrorCode::Unsupported, file + ": partial_rotary_factor other than 1 is not supported (every head dimension is rotated)");
  const int64_t half = c.head_dim / 2;
  c.inv_freq.assign(size_t(half), 0.0);
  for (int64_t i = 0; i < half; i++) c.inv_freq[size_t(i)] = std::pow(c.rope_theta, -2.0 * double(i) / double(c.head_dim));
  c.rope_type = type;
  if (type == "default") return;
  if (type == "linear") {
    const double factor = rope_number(*src, "factor", NAN, where);
    for (double& f : c.inv_freq) f /= factor;
  } else if (type == "dynamic") {
    rope_number(*src, "factor", NAN, where);
  } else if (type == "llama3") {
    const double factor = rope_number(*src, "factor", NAN, where);
    const double low = rope_number(*src, "low_freq_factor", NAN, where);
    const double high = rope_number(*src, "high_freq_factor", NAN, where);
    const double old_ctx = rope_number(*src, "original_max_position_embeddings", NAN, where);
    if (!(high > low)) fail(ErrorCode::Config, where + ": high_freq_factor must be greater than low_freq_factor");
    const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    const double pi = 3.14159265358979323846;
    for (double& f : c.inv_freq) {
      const double wavelen = 2 * pi / f;
      if (wavelen > low_wavelen) f = f / factor;
      else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - low) / (high - low);
        f = (1 - smooth) * f / factor + smooth * f;
      }
    }
  } else if (type == "yarn") {
    // YaRN: per rotary pair, a ramp between interpolated (θ·factor) and original frequencies over
    // the pairs whose wavelength is between beta_fast and beta_slow rotations of the original
    // context; cos and sin scaled by the attention factor (0.1·ln(factor) + 1 unless given).
    const Json* f = src->find("factor");
    const double old_ctx = rope_number(*src, "original_max_position_embeddings", double(c.max_pos), where);
    const double factor = f && !f->is_null() ? rope_number(*src, "factor", NAN, where) : double(c.max_pos) / old_ctx;
    const Json* given = src->find("attention_factor");
    auto mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
    const Json* ms = src->find("mscale");
    const Json* ms_all = src->find("mscale_all_dim");
    const bool both = ms && ms->is_number() && ms->number != 0 && ms_all && ms_all->is_number() && ms_all->number != 0;
    c.rope_attention_scale = given && !given->is_null() ? rope_number(*src, "attention_factor", NAN, where)
                             : both ? mscale(factor, ms->number) / mscale(factor, ms_all->number)
                                    : mscale(factor, 1.0);
    const double beta_fast = rope_number(*src, "beta_fast", 32.0, where), beta_slow = rope_number(*src, "beta_slow", 1.0, where);
    const Json* tr = src->find("truncate");
    if (tr && !tr->is_null() && !tr->is_bool()) fail(ErrorCode::Config, where + ": field 'truncate' must be true or false");
    const bool truncate = !(tr && tr->is_bool() && !tr->boolean);
    const double dim = double(c.head_dim), pi = 3.14159265358979323846;
    auto correction_dim = [&](double rotations) { return dim * std::log(old_ctx / (rotations * 2 * pi)) / (2 * std::log(c.rope_theta)); };
    double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
    if (truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0), high = std::min(high, dim - 1);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; i++) {
      const double ramp = std::min(1.0, std::max(0.0, (double(i) - low) / (high - low)));
      const double keep = 1 - ramp;  // the share of the original (extrapolated) frequency
      double& fr = c.inv_freq[size_t(i)];
      fr = fr / factor * (1 - keep) + fr * keep;
    }
  } else {
    fail(ErrorCode::Unsupported, where + ": rope_type '" + type + "' is not supported (default, linear, dynamic, llama3, yarn)");
  }
}

ModelConfig config_parse(const std::string& text, const std::string& file) {
  Json j;
  try {
    j = Json::parse(text.data(), text.size());
  } catch (const std::runtime_error& e) {
    fail(ErrorCode::Config, file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) fail(ErrorCode::Config, file + ": not a JSON object");
  ConfigReader r{j, file};

  ModelConfig c;
  c.model_type = r.string("model_type", "");
  if (c.model_type.empty()) r.bad("model_type", "is missing");
  c.torch_dtype = r.string("torch_dtype", r.string("dtype", ""));
  c.vocab = r.integer({"vocab_size"}, true, 0);
  c.bos_id = r.ids("bos_token_id").empty() ? -1 : r.ids("bos_token_id")[0];
  c.eos_ids = r.ids("eos_token_id");
  const Architecture* arch = architecture_for_type(c.model_type);
  if (!arch) fail(ErrorCode::Unsupported, file + ": model_type '" + c.model_type + "' is not supported (" + supported_model_types() + ")");
  c.arch.family = arch->family;
  c.arch.lora_targets = arch->lora_targets;
  arch->read_config(r, c);
  return c;
}

ModelConfig config_load(const std::string& dir) {
  const std::string file = dir + "/config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorCode::IO, file + ": cannot read (is '" + dir + "' a Hugging Face model folder?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return config_parse(ss.str(), file);
}

}  // namespace kpig
