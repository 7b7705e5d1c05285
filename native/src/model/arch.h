// Architectures as data. One Architecture per model family (native/src/model/arch/<family>.cpp)
// says everything that differs between families:
//   - which config.json model types it reads, and how (its traits, sizes, RoPE, what it refuses);
//   - every tensor of a Hugging Face checkpoint: its name, its shape in the file, and the engine
//     buffer it fills (a slice of a fused q|k|v or gate|up weight, a norm, an embedding);
//   - its LoRA defaults.
// Loading, the tensor registry (names for checkpoints, AdamW and the N-API layer), LoRA and the
// layout TypeScript writes models with are all read from these tables; forward and backward read
// only the traits (ArchTraits in kpig/model.h).
#pragma once
#include <string>
#include <vector>

#include "../../include/kpig/model.h"
#include "config_reader.h"

namespace kpig {

// The engine buffer a checkpoint tensor fills. Linear parts are (out, in) row blocks [o0, o1) of a
// (possibly fused) layer, or the whole (in, out) matrix of a GPT-2 Conv1D.
enum class Part : uint8_t {
  TokEmb, PosEmb, Head, FinalNormW, FinalNormB,
  Norm1W, Norm1B, Norm2W, Norm2B,
  QKV, QKVBias, O, OBias, Up, UpBias, Down, DownBias,
};

struct TensorSlot {
  std::string name;              // the Hugging Face name, e.g. model.layers.3.self_attn.k_proj.weight
  std::vector<int64_t> shape;    // as stored in the file
  Part part = Part::TokEmb;
  int64_t layer = -1;            // −1 for tensors outside the layers
  int64_t o0 = 0, o1 = 0;        // output rows of the fused layer this tensor fills (linear parts)
  bool decay = false;            // AdamW weight decay applies
  // A linear module as PEFT names it (the weight's name without ".weight"); empty for the rest.
  std::string module;
  bool in_major = false;         // a GPT-2 Conv1D weight, stored (in, out)
};

struct Architecture {
  const char* family;
  std::vector<std::string> model_types;
  // Fills the family's fields of `c` (sizes, traits, biases, RoPE) from config.json, refusing by
  // name what the engine does not compute. Common fields (model_type, vocab, ids, dtype) are read.
  void (*read_config)(const ConfigReader& r, ModelConfig& c);
  // Every parameter tensor of a checkpoint with this config, in the engine's registry order (block
  // by block: norm, attention, norm, MLP; the model writer draws random weights in this order), tied
  // heads left out. `prefix` is what a GPT-2 checkpoint puts before its names ("transformer."
  // or nothing); other families ignore it.
  std::vector<TensorSlot> (*tensors)(const ModelConfig& c, const std::string& prefix);
  // PEFT's default LoRA target modules for the family.
  std::vector<std::string> lora_targets;
  // Name prefixes a checkpoint may put before every tensor name (the first one is written).
  std::vector<std::string> prefixes;
};

// For LLaMA-style families (arch/llama.cpp): sizes, grouped-query heads, head_dim and RoPE; and the
// checkpoint layout of model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
// mlp.{gate,up,down}_proj, post_attention_layernorm}, model.norm and lm_head.
void read_llama_like(const ConfigReader& r, ModelConfig& c, double default_eps);
std::vector<TensorSlot> llama_like_tensors(const ModelConfig& c);

// Every architecture the engine knows (arch/registry.cpp), and the one that reads a model type.
const std::vector<const Architecture*>& architectures();
const Architecture* architecture_for_type(const std::string& model_type);
const Architecture& architecture_of(const ModelConfig& c);

// The model types of every architecture, comma separated (for error messages).
std::string supported_model_types();

}  // namespace kpig
