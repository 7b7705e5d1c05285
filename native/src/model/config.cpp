// config.json → ModelConfig, following Hugging Face's defaults for each model_type.
#include <cmath>
#include <fstream>
#include <sstream>

#include "../../include/kpig/model.h"
#include "../core/json.h"

namespace kpig {

namespace {

struct Reader {
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

// RoPE from transformers 5's `rope_parameters` {rope_type, rope_theta, factor, …} or transformers
// 4's top-level `rope_theta` and `rope_scaling` {rope_type | type, factor, …}; inv_freq as
// transformers' modeling_rope_utils computes it. `dynamic` (NTK) rescales only past
// original_max_position_embeddings, which the engine's context never exceeds, so inside it equals
// the default. Any other type is refused by name rather than run as the default.
void rope_load(const Reader& r, ModelConfig& c, const std::string& file) {
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

}  // namespace

ModelConfig config_load(const std::string& dir) {
  const std::string file = dir + "/config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(ErrorCode::IO, file + ": cannot read (is '" + dir + "' a Hugging Face model folder?)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  Json j;
  try {
    j = Json::parse(text.data(), text.size());
  } catch (const std::runtime_error& e) {
    fail(ErrorCode::Config, file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) fail(ErrorCode::Config, file + ": not a JSON object");
  Reader r{j, file};

  ModelConfig c;
  c.model_type = r.string("model_type", "");
  if (c.model_type.empty()) r.bad("model_type", "is missing");
  c.torch_dtype = r.string("torch_dtype", r.string("dtype", ""));
  c.bos_id = r.ids("bos_token_id").empty() ? -1 : r.ids("bos_token_id")[0];
  c.eos_ids = r.ids("eos_token_id");
  c.vocab = r.integer({"vocab_size"}, true, 0);

  if (c.model_type == "gpt2") {
    c.arch = Arch::GPT2;
    c.hidden = r.integer({"n_embd", "hidden_size"}, true, 0);
    c.layers = r.integer({"n_layer", "num_hidden_layers"}, true, 0);
    c.heads = r.integer({"n_head", "num_attention_heads"}, true, 0);
    c.kv_heads = c.heads;
    c.max_pos = r.integer({"n_positions", "n_ctx", "max_position_embeddings"}, true, 0);
    c.ffn = r.integer({"n_inner"}, false, 4 * c.hidden);
    c.eps = r.real("layer_norm_epsilon", 1e-5);
    c.tied = r.boolean("tie_word_embeddings", true);
    c.qkv_bias = c.o_bias = true;
    c.scale_attn_by_inverse_layer_idx = r.boolean("scale_attn_by_inverse_layer_idx", false);
    const std::string act = r.string("activation_function", "gelu_new");
    if (act != "gelu_new" && act != "gelu_pytorch_tanh")
      fail(ErrorCode::Unsupported, file + ": activation_function '" + act + "' is not supported (gelu_new, gelu_pytorch_tanh)");
    if (!r.boolean("scale_attn_weights", true))
      fail(ErrorCode::Unsupported, file + ": scale_attn_weights false is not supported (scores are scaled by 1/sqrt(head_dim))");
    if (r.boolean("add_cross_attention", false))
      fail(ErrorCode::Unsupported, file + ": add_cross_attention is not supported (decoder-only models)");
    if (c.hidden % c.heads != 0) r.bad("n_embd", "must be divisible by n_head");
    c.head_dim = c.hidden / c.heads;
  } else if (c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "mistral") {
    c.arch = Arch::Llama;
    c.hidden = r.integer({"hidden_size"}, true, 0);
    c.layers = r.integer({"num_hidden_layers"}, true, 0);
    c.heads = r.integer({"num_attention_heads"}, true, 0);
    c.kv_heads = r.integer({"num_key_value_heads"}, false, c.heads);
    c.ffn = r.integer({"intermediate_size"}, true, 0);
    c.max_pos = r.integer({"max_position_embeddings"}, true, 0);
    c.eps = r.real("rms_norm_eps", 1e-6);
    c.tied = r.boolean("tie_word_embeddings", false);
    if (c.heads % c.kv_heads != 0) r.bad("num_key_value_heads", "must divide num_attention_heads");
    if (r.get("head_dim")) {
      c.head_dim = r.integer({"head_dim"}, true, 0);
    } else {
      if (c.hidden % c.heads != 0) r.bad("hidden_size", "must be divisible by num_attention_heads");
      c.head_dim = c.hidden / c.heads;
    }
    if (c.head_dim % 2 != 0) r.bad("head_dim", "must be even for RoPE");
    rope_load(r, c, file);
    if (c.model_type == "qwen2") {
      c.qkv_bias = true;  // Qwen2 always has q/k/v biases and an unbiased o_proj
      if (r.boolean("use_sliding_window", false))
        fail(ErrorCode::Unsupported, file + ": use_sliding_window is not supported");
    } else if (c.model_type == "llama") {
      c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    } else if (const Json* sw = r.get("sliding_window")) {
      if (!sw->is_number() || sw->number < double(c.max_pos))
        fail(ErrorCode::Unsupported, file + ": sliding_window is not supported (set it to null)");
    }
    if (r.boolean("mlp_bias", false)) fail(ErrorCode::Unsupported, file + ": mlp_bias is not supported");
    const std::string act = r.string("hidden_act", "silu");
    if (act != "silu") fail(ErrorCode::Unsupported, file + ": hidden_act '" + act + "' is not supported (silu)");
  } else {
    fail(ErrorCode::Unsupported, file + ": model_type '" + c.model_type + "' is not supported (gpt2, llama, qwen2, mistral)");
  }
  return c;
}

}  // namespace kpig
