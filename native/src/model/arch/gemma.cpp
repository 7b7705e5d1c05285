// Gemma (the first generation, model_type "gemma"): the LLaMA layout with GeGLU (tanh GELU on the
// gate), RMSNorm scaling by (1 + weight), token embeddings times sqrt(hidden), and a tied head.
#include "../arch.h"

namespace kpig {

namespace {

void read_gemma(const ConfigReader& r, ModelConfig& c) {
  const std::string& file = r.file;
  c.arch.norm = NormKind::RMSNorm;
  c.arch.norm_plus_one = true;
  c.arch.act = Activation::GeluTanhGLU;
  c.arch.embed_scale = true;
  read_llama_like(r, c, 1e-6);
  c.tied = r.boolean("tie_word_embeddings", true);
  c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
  // transformers 5 reads `hidden_act`; configs of transformers 4 may name it `hidden_activation`.
  const char* field = r.get("hidden_activation") ? "hidden_activation" : "hidden_act";
  const std::string act = r.string(field, "gelu_pytorch_tanh");
  if (act != "gelu_pytorch_tanh" && act != "gelu_new")
    fail(ErrorCode::Unsupported, file + ": " + field + " '" + act + "' is not supported (gelu_pytorch_tanh, the tanh GELU)");
  if (r.boolean("use_bidirectional_attention", false))
    fail(ErrorCode::Unsupported, file + ": use_bidirectional_attention is not supported (causal attention only)");
}

std::vector<TensorSlot> gemma_tensors(const ModelConfig& c, const std::string&) { return llama_like_tensors(c); }

}  // namespace

extern const Architecture kGemmaArchitecture{
    "gemma", {"gemma"}, read_gemma, gemma_tensors, {"q_proj", "v_proj"}, {""},
};

}  // namespace kpig
