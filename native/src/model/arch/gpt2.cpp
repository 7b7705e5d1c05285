// GPT-2: learned positions, LayerNorm, gelu_new MLP, fused q|k|v in Conv1D layout (in, out) with biases.
#include "../arch.h"

namespace kpig {

namespace {

void read_gpt2(const ConfigReader& r, ModelConfig& c) {
  const std::string& file = r.file;
  c.arch.norm = NormKind::LayerNorm;
  c.arch.act = Activation::GeluTanh;
  c.arch.learned_positions = true;
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
  if (c.hidden % c.heads != 0) r.bad("n_embd", "(" + std::to_string(c.hidden) + ") must be divisible by n_head (" + std::to_string(c.heads) + ")");
  c.head_dim = c.hidden / c.heads;
}

std::vector<TensorSlot> gpt2_tensors(const ModelConfig& c, const std::string& p) {
  const int64_t C = c.hidden, F = c.ffn;
  std::vector<TensorSlot> t;
  t.push_back({p + "wte.weight", {c.vocab, C}, Part::TokEmb, -1, 0, 0, true, ""});
  t.push_back({p + "wpe.weight", {c.max_pos, C}, Part::PosEmb, -1, 0, 0, true, ""});
  for (int64_t i = 0; i < c.layers; i++) {
    const std::string l = p + "h." + std::to_string(i) + ".";
    // Conv1D (in, out): the whole matrix of its layer, and its bias.
    auto conv1d = [&](const std::string& m, Part w, Part b, int64_t in, int64_t out) {
      t.push_back({l + m + ".weight", {in, out}, w, i, 0, out, true, l + m, true});
      t.push_back({l + m + ".bias", {out}, b, i, 0, out, false, ""});
    };
    t.push_back({l + "ln_1.weight", {C}, Part::Norm1W, i, 0, 0, false, ""});
    t.push_back({l + "ln_1.bias", {C}, Part::Norm1B, i, 0, 0, false, ""});
    conv1d("attn.c_attn", Part::QKV, Part::QKVBias, C, 3 * C);
    conv1d("attn.c_proj", Part::O, Part::OBias, C, C);
    t.push_back({l + "ln_2.weight", {C}, Part::Norm2W, i, 0, 0, false, ""});
    t.push_back({l + "ln_2.bias", {C}, Part::Norm2B, i, 0, 0, false, ""});
    conv1d("mlp.c_fc", Part::Up, Part::UpBias, C, F);
    conv1d("mlp.c_proj", Part::Down, Part::DownBias, F, C);
  }
  t.push_back({p + "ln_f.weight", {C}, Part::FinalNormW, -1, 0, 0, false, ""});
  t.push_back({p + "ln_f.bias", {C}, Part::FinalNormB, -1, 0, 0, false, ""});
  if (!c.tied) t.push_back({"lm_head.weight", {c.vocab, C}, Part::Head, -1, 0, 0, true, ""});
  return t;
}

}  // namespace

extern const Architecture kGpt2Architecture{
    "gpt2", {"gpt2"}, read_gpt2, gpt2_tensors, {"c_attn"}, {"transformer.", ""},
};

}  // namespace kpig
