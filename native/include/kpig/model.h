// The native core's public C++ API: load a Hugging Face model folder, run packed forward passes,
// and generate greedily with a KV cache. Knows nothing about Node; the N-API addon and the C++
// drivers in native/tests use exactly this header.
//
// Legend for shape comments: T = tokens in a packed batch, S = sequences, C = hidden size,
// V = vocabulary, H = query heads, K = key/value heads, D = head dim, F = MLP width.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "error.h"

namespace kpig {

// How a model family computes, as its architecture (native/src/model/arch/) reads config.json.
// Forward, backward and training follow these traits; nothing else names a family.
enum class NormKind : uint8_t { LayerNorm, RMSNorm };
enum class Activation : uint8_t {
  GeluTanh,     // GPT-2: gelu_new(up(x)), no gate
  SiluGLU,      // LLaMA: silu(gate(x)) · up(x)
  GeluTanhGLU,  // Gemma: gelu_tanh(gate(x)) · up(x)
};
struct ArchTraits {
  std::string family;              // the architecture that read the config: gpt2 | llama | gemma
  NormKind norm = NormKind::RMSNorm;
  bool norm_plus_one = false;      // the norm scales by (1 + weight) (Gemma)
  Activation act = Activation::SiluGLU;
  bool learned_positions = false;  // a position embedding table (GPT-2); otherwise RoPE
  bool embed_scale = false;        // token embeddings times sqrt(hidden) (Gemma)
  std::vector<std::string> lora_targets;  // PEFT's default LoRA target modules for the family
  bool gated() const { return act != Activation::GeluTanh; }
};

struct ModelConfig {
  std::string model_type;  // as in config.json (every model type of every architecture)
  ArchTraits arch;
  int64_t vocab = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, ffn = 0, max_pos = 0;
  double rope_theta = 10000.0;
  // RoPE as config.json asks (rope_parameters, or rope_theta + rope_scaling): default, linear,
  // dynamic, llama3 or yarn; inv_freq[i] is the angle per position of rotary pair i (head_dim / 2
  // entries); cos and sin are multiplied by rope_attention_scale (YaRN's attention factor, else 1).
  std::string rope_type = "default";
  std::vector<double> inv_freq;
  double rope_attention_scale = 1.0;
  double eps = 1e-5;
  bool tied = false;
  bool qkv_bias = false, o_bias = false;
  bool scale_attn_by_inverse_layer_idx = false;  // GPT-2 option: scores also divided by (layer+1)
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  std::string torch_dtype;  // as declared in config.json ("" when absent)
};

// Parses <dir>/config.json; throws Error(Config | Unsupported) naming the field.
ModelConfig config_load(const std::string& dir);
// Parses the text of a config.json (`file` names it in errors).
ModelConfig config_parse(const std::string& text, const std::string& file);

// One parameter tensor of a Hugging Face checkpoint with this config: name and shape as in the
// file, in the engine's order (the tied head left out). What TypeScript writes models with.
struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<TensorLayout> checkpoint_layout(const ModelConfig& c);

struct LoadOptions {
  int threads = 0;  // 0 = all cores available to the process
  // "cpu", or "cuda": IG scoring and hidden states on the GPU (native/src/model/device.h), the
  // rest on the CPU. When no GPU can be used the model stays on the CPU and ModelInfo says why.
  std::string device = "cpu";
};

struct ModelInfo {
  ModelConfig config;
  int64_t n_params = 0;          // distinct parameters (tied head counted once)
  std::string weights_dtype;     // dtype of the weights in the files (F32/F16/BF16, or "mixed")
  int64_t weights_file_bytes = 0;
  int64_t memory_bytes = 0;      // resident float32 weights of the engine
  std::vector<std::string> files;
  std::vector<std::string> notes;  // e.g. ignored buffers, an ignored tied lm_head
  std::string isa;       // fp32 matmuls: amx (three bf16 pieces, fp32 accuracy), avx512, avx2 or scalar
  std::string bf16_isa;  // bf16 matmuls: amx, avx512_bf16 or emulated
  int threads = 1;
  std::string device = "cpu";  // where IG scoring and hidden states run: cpu, or the device's name
  std::string device_note;     // why a device asked for is not used (which library or call failed)
};

// A packed batch: sequence s is tokens[offsets[s] .. offsets[s+1]), causal, positions from 0.
struct PackedBatch {
  const int32_t* tokens = nullptr;
  int64_t n_tokens = 0;
  const int32_t* offsets = nullptr;  // S + 1 entries, offsets[0] = 0, offsets[S] = n_tokens
  int64_t n_seqs = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  // Sampling: temperature 0 is greedy (argmax). Otherwise softmax(logits / temperature), cut to the
  // top_k most likely tokens (0: all) and to the smallest set whose probability reaches top_p,
  // then one draw from a stream that is a function of (seed, the prompt's index in the call, step).
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<int32_t> eos_ids;  // empty: the config's eos ids
  // Read before every step; a non-zero entry stops that sequence (e.g. a stop string was seen).
  const volatile uint8_t* stop_flags = nullptr;
  // Called after every step with one new token per sequence (−1 for finished ones); it may throw to
  // end the call (the addon throws a Cancelled error when the caller aborts).
  std::function<void(const int32_t* step_tokens, int64_t n_seqs)> on_step;
};

enum class FinishReason : uint8_t { Eos = 0, Length = 1, Stopped = 2, Context = 3 };

struct GenerateResult {
  std::vector<int32_t> tokens;   // new tokens of all sequences, concatenated (EOS not included)
  std::vector<int32_t> offsets;  // S + 1
  std::vector<uint8_t> finish;   // FinishReason per sequence
};

// LoRA as PEFT defines it: y = base(x) + (alpha/r)·(dropout(x)·Aᵀ)·Bᵀ on every targeted module.
struct LoraConfig {
  int64_t rank = 8;
  float alpha = 16.f;
  float dropout = 0.f;
  // Module names matched as PEFT does (a path equal to the target or ending in ".target"), or
  // "all-linear". Empty: q_proj,v_proj (LLaMA family) or c_attn (GPT-2).
  std::vector<std::string> targets;
  uint64_t seed = 0;  // A ~ U(±1/sqrt(in)) from this seed (PEFT's kaiming-uniform bound); B = 0
};

struct AdamWOptions {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double max_grad_norm = 0.0;  // clip the global gradient norm to this (0: no clipping)
  bool decay_all = false;      // false: biases, norms and LoRA are not decayed (only ≥2-D base weights)
};

struct StepResult {
  double grad_norm = 0;  // global norm before clipping
  bool skipped = false;  // NaN/Inf in the gradients: nothing was updated, gradients were cleared
  int64_t step = 0;      // optimizer steps taken so far
};

struct TrainResult {
  double loss = 0;          // Σ w·NLL over the weighted positions
  int64_t n_weighted = 0;   // positions with w ≠ 0 (the only ones that reach the LM head)
};

// A named trainable or stored tensor (HF name for base weights, PEFT name for LoRA adapters).
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  bool trainable = false;
};

// One full/masked pair for information-gain scoring: both sequences end with the same
// response_len response tokens, teacher-forced (token t predicted from position t−1).
struct IgPair {
  const int32_t* full = nullptr;
  int64_t full_len = 0;
  const int32_t* masked = nullptr;
  int64_t masked_len = 0;
  int64_t response_len = 0;
};

// Per-pair scores (nats, means over the response tokens), as DESIGN.md §1 defines them:
//   ce_x = mean −log p_x(y_t);  ig_ce = ce_masked − ce_full;
//   ig_kl = mean KL(p_full ‖ p_masked);  ig_js = mean JS(p_full, p_masked) (≤ ln 2);
//   entropy_x = mean −Σ p_x log p_x.
struct IgScores {
  double ce_full = 0, ce_masked = 0, ig_ce = 0, ig_kl = 0, ig_js = 0, entropy_full = 0, entropy_masked = 0;
  int64_t n_tokens = 0;
  int64_t shared_prefix = 0;       // tokens both sequences share from the start
  // Positions the pass ran for this pair: its shared start runs once, and with the prefix cache
  // (set_prefix_cache) whatever another sequence of the call or the store already holds runs
  // not at all; a sequence always computes its own response-predicting rows.
  int64_t positions_computed = 0;
};

// Optional per-token values of one pair, response_len entries each.
struct IgTokenScores {
  std::vector<float> nll_full, nll_masked, kl, js, entropy_full, entropy_masked;
};

// The prefix cache's counters since the model was loaded (see Model::set_prefix_cache).
struct PrefixCacheStats {
  int64_t sequences = 0;      // sequences planned with the cache on
  int64_t hits = 0;           // ... that started after a shared prefix (of the call or stored)
  int64_t store_hits = 0;     // ... whose prefix came from the store (an earlier call)
  int64_t tokens = 0;         // tokens of those sequences
  int64_t tokens_reused = 0;  // ... not computed because their prefix was shared
  int64_t entries = 0, bytes = 0, evictions = 0;  // the store now, and entries evicted so far
};

class ModelImpl;

class Model {
 public:
  // Loads <dir>/config.json and the safetensors weights (single file or sharded with an index).
  static std::shared_ptr<Model> load(const std::string& dir, const LoadOptions& options = {});
  ~Model();

  const ModelInfo& info() const;

  // Throws Error(Input) naming the sequence and position of the first bad token id or length.
  void validate(const PackedBatch& batch) const;

  // logits: (T, V) row t = prediction of the token after tokens[t].
  void forward_logits(const PackedBatch& batch, float* logits);
  // logprobs: (T) log p(targets[t] | tokens of its sequence up to t); targets[t] < 0 gives 0.
  // Streams the LM head over row chunks: never holds (T, V) logits.
  void forward_logprobs(const PackedBatch& batch, const int32_t* targets, float* logprobs);
  // embeddings: (S, C) the mean over each sequence's rows of the final-normed hidden states (the
  // `last_hidden_state` Hugging Face returns), one row per sequence.
  void forward_mean_hidden(const PackedBatch& batch, float* embeddings);
  // hidden: (T, C) the final-normed hidden states of every position (the input of the LM head;
  // Hugging Face's `hidden_states[-1]`), without LoRA dropout.
  void forward_final_hidden(const PackedBatch& batch, float* hidden);
  // Greedy decoding of every prompt in the batch with a per-sequence KV cache.
  GenerateResult generate(const PackedBatch& prompts, const GenerateOptions& options);

  // Matmul inputs rounded to bfloat16 with float32 accumulation (AVX512_BF16 where available),
  // weights, activations and optimizer state staying float32; or plain float32 (the default).
  void set_matmul_bf16(bool on);
  bool matmul_bf16() const;

  // Information-gain scores of full/masked pairs. The shared prefix of each pair runs once (its
  // keys and values are reused by both continuations), and so does a prefix shared between pairs
  // (the prefix cache); the LM head runs only at response-predicting
  // positions, a chunk of rows at a time. per_token (n entries) is filled when given.
  void score_ig(const IgPair* pairs, int64_t n, IgScores* out, IgTokenScores* per_token = nullptr);

  // Prefix cache (scoring and generation): sequences of a call that start with the same tokens
  // compute that prefix once, and up to max_bytes of such prefixes' keys and values are kept
  // between calls (least recently used dropped first). 0 turns it off. Default 256 MiB. Results
  // equal the unshared computation up to float32 rounding. Cleared whenever weights change.
  void set_prefix_cache(int64_t max_bytes);
  // Drops every stored prefix (the size limit stays): the next call computes its prefixes afresh,
  // so its results do not depend on what earlier calls left behind.
  void clear_prefix_cache();
  PrefixCacheStats prefix_cache_stats();

  // Data-parallel training: every gradient ← Σ over the ranks of the job (comm.h; a no-op in a
  // one-process world). Every rank calls it once per optimizer step, before optimizer_step.
  void allreduce_grads();

  // ---- training ----
  // Full fine-tuning: every base weight gets a gradient and optimizer state.
  void train_full();
  // Adds LoRA adapters (the base stays frozen unless train_full() was called); returns the PEFT
  // module paths that matched. Throws Error(Input) when no module matches a target.
  std::vector<std::string> lora_add(const LoraConfig& config);
  // Folds every adapter into its base weight (W += scale·B·A, in the weight's own layout) and
  // removes the adapters.
  void lora_merge();
  // Weighted NLL: loss = Σ_t w[t]·(−log p(tokens[t+1] | ..tokens[t])) over each sequence; w may be
  // negative; w = 0 positions skip the LM head. The weight of a sequence's last position must be 0.
  // Accumulates gradients (call zero_grad() between optimizer steps). nll_out (T) receives each
  // weighted position's NLL (0 elsewhere) when given. seed drives LoRA dropout. hidden_grad (T, C),
  // when given, is the gradient of a further loss on the final-normed hidden states (what
  // forward_final_hidden returns), added to the LM head's before the backward pass.
  TrainResult train_accumulate(const PackedBatch& batch, const float* weights, float* nll_out, uint64_t seed,
                               const float* hidden_grad = nullptr);
  // One AdamW step (torch.optim.AdamW semantics) over all trainable tensors, then zero_grad().
  StepResult optimizer_step(const AdamWOptions& options);
  void zero_grad();
  int64_t optimizer_steps() const;
  void set_optimizer_steps(int64_t steps);

  // Named tensors: base weights (HF names), LoRA adapters (PEFT names), their gradients and
  // AdamW moments. kind: "param" | "grad" | "exp_avg" | "exp_avg_sq".
  std::vector<TensorInfo> tensors() const;
  void read_tensor(const std::string& name, const std::string& kind, float* out) const;
  void write_tensor(const std::string& name, const std::string& kind, const float* in);

 private:
  explicit Model(std::unique_ptr<ModelImpl> impl);
  std::unique_ptr<ModelImpl> impl_;

 public:
  // The engine's state, for backends and their standalone drivers (native/tests/): not an API.
  ModelImpl& internals() { return *impl_; }
  std::mutex mu_;  // one call at a time per model: calls share the thread pool and scratch
};

}  // namespace kpig
