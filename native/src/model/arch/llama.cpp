// The LLaMA family (LLaMA, Qwen2, Mistral): RoPE, RMSNorm, SwiGLU, grouped-query attention; q, k, v
// fused row-wise into one (q + 2kv, C) weight and gate, up into one (2F, C): one GEMM each.
#include "../arch.h"

namespace kpig {

// What LLaMA-style families share: sizes, grouped-query heads, head_dim, RoPE.
void read_llama_like(const ConfigReader& r, ModelConfig& c, double default_eps) {
  c.hidden = r.integer({"hidden_size"}, true, 0);
  c.layers = r.integer({"num_hidden_layers"}, true, 0);
  c.heads = r.integer({"num_attention_heads"}, true, 0);
  c.kv_heads = r.integer({"num_key_value_heads"}, false, c.heads);
  c.ffn = r.integer({"intermediate_size"}, true, 0);
  c.max_pos = r.integer({"max_position_embeddings"}, true, 0);
  c.eps = r.real("rms_norm_eps", default_eps);
  if (c.heads % c.kv_heads != 0)
    r.bad("num_key_value_heads", "(" + std::to_string(c.kv_heads) + ") must divide num_attention_heads (" + std::to_string(c.heads) + ")");
  if (r.get("head_dim")) {
    c.head_dim = r.integer({"head_dim"}, true, 0);
  } else {
    if (c.hidden % c.heads != 0)
      r.bad("hidden_size", "(" + std::to_string(c.hidden) + ") must be divisible by num_attention_heads (" + std::to_string(c.heads) + "); or set head_dim");
    c.head_dim = c.hidden / c.heads;
  }
  if (c.head_dim % 2 != 0) r.bad("head_dim", "(" + std::to_string(c.head_dim) + ") must be even for RoPE");
  rope_load(r, c, r.file);
}

// The tensors of a LLaMA-style checkpoint: model.embed_tokens, per layer two norms, q/k/v/o and
// gate/up/down (biases where the config has them), model.norm, lm_head unless tied.
std::vector<TensorSlot> llama_like_tensors(const ModelConfig& c) {
  const int64_t C = c.hidden, F = c.ffn, qd = c.heads * c.head_dim, kd = c.kv_heads * c.head_dim;
  std::vector<TensorSlot> t;
  t.push_back({"model.embed_tokens.weight", {c.vocab, C}, Part::TokEmb, -1, 0, 0, true, ""});
  for (int64_t i = 0; i < c.layers; i++) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    // Rows [o0, o1) of a fused (out, in) layer, and its bias rows when it has them.
    auto rows = [&](const std::string& m, Part w, Part b, int64_t o0, int64_t o1, int64_t in, bool bias) {
      t.push_back({l + m + ".weight", {o1 - o0, in}, w, i, o0, o1, true, l + m});
      if (bias) t.push_back({l + m + ".bias", {o1 - o0}, b, i, o0, o1, false, ""});
    };
    t.push_back({l + "input_layernorm.weight", {C}, Part::Norm1W, i, 0, 0, false, ""});
    rows("self_attn.q_proj", Part::QKV, Part::QKVBias, 0, qd, C, c.qkv_bias);
    rows("self_attn.k_proj", Part::QKV, Part::QKVBias, qd, qd + kd, C, c.qkv_bias);
    rows("self_attn.v_proj", Part::QKV, Part::QKVBias, qd + kd, qd + 2 * kd, C, c.qkv_bias);
    rows("self_attn.o_proj", Part::O, Part::OBias, 0, C, qd, c.o_bias);
    t.push_back({l + "post_attention_layernorm.weight", {C}, Part::Norm2W, i, 0, 0, false, ""});
    rows("mlp.gate_proj", Part::Up, Part::UpBias, 0, F, C, false);
    rows("mlp.up_proj", Part::Up, Part::UpBias, F, 2 * F, C, false);
    rows("mlp.down_proj", Part::Down, Part::DownBias, 0, C, F, false);
  }
  t.push_back({"model.norm.weight", {C}, Part::FinalNormW, -1, 0, 0, false, ""});
  if (!c.tied) t.push_back({"lm_head.weight", {c.vocab, C}, Part::Head, -1, 0, 0, true, ""});
  return t;
}

namespace {

void read_llama(const ConfigReader& r, ModelConfig& c) {
  const std::string& file = r.file;
  c.arch.norm = NormKind::RMSNorm;
  c.arch.act = Activation::SiluGLU;
  read_llama_like(r, c, 1e-6);
  c.tied = r.boolean("tie_word_embeddings", false);
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and an unbiased o_proj
    if (r.boolean("use_sliding_window", false)) fail(ErrorCode::Unsupported, file + ": use_sliding_window is not supported");
  } else if (c.model_type == "llama") {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
  } else if (const Json* sw = r.get("sliding_window")) {
    if (!sw->is_number() || sw->number < double(c.max_pos))
      fail(ErrorCode::Unsupported, file + ": sliding_window " + (sw->is_number() ? std::to_string(int64_t(sw->number)) : "") +
                                       " is shorter than the context (" + std::to_string(c.max_pos) + ") and is not supported (set it to null)");
  }
  if (r.boolean("mlp_bias", false)) fail(ErrorCode::Unsupported, file + ": mlp_bias is not supported");
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") fail(ErrorCode::Unsupported, file + ": hidden_act '" + act + "' is not supported (silu)");
}

std::vector<TensorSlot> llama_tensors(const ModelConfig& c, const std::string&) { return llama_like_tensors(c); }

}  // namespace

extern const Architecture kLlamaArchitecture{
    "llama", {"llama", "qwen2", "mistral"}, read_llama, llama_tensors, {"q_proj", "v_proj"}, {""},
};

}  // namespace kpig
