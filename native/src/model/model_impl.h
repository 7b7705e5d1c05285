// Internal state of a loaded model: float32 weights in Hugging Face layouts (fused where that
// saves a GEMM), optional LoRA adapters, gradients and optimizer state when training, the backend
// that computes (backend/backend.h), and the packed forward pass shared by scoring, generation and
// training. Model code calls the backend only; it includes no backend's own header.
// Legend: T = tokens in a packed batch, C = hidden, V = vocab, H/K = query/kv heads, D = head dim,
// F = MLP width, r = LoRA rank.
#pragma once
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "../../include/kpig/model.h"
#include "../backend/backend.h"
#include "../core/memory.h"
#include "arch.h"
#include "device.h"

namespace kpig {

// SplitMix64: the mixing step behind the engine's seeded draws (dropout masks, sampling).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A LoRA adapter on output columns [o0, o1) of a (possibly fused) linear layer, as PEFT defines it:
// y[:, o0:o1] += scale · (dropout(x)·Aᵀ)·Bᵀ, scale = alpha / r.
struct LoraAdapter {
  std::string path;  // PEFT module path, e.g. model.layers.0.self_attn.q_proj
  int64_t o0 = 0, o1 = 0, rank = 0;
  float scale = 1.f, dropout = 0.f;
  Floats A, B;    // (r, in), (o1−o0, r)
  Floats gA, gB;  // gradients, same shapes
};

// What a linear layer's forward keeps for its backward when training with LoRA.
struct LinearSaved {
  std::vector<Floats> u;         // per adapter: (T, r) = dropout(x)·Aᵀ
  std::vector<Floats> xd;        // per adapter with dropout: (T, in) dropped input
  std::vector<std::vector<uint8_t>> mask;    // per adapter with dropout: (T, in) kept = 1
};

// A linear layer y = x·W + b. GPT-2's Conv1D stores W as (in, out) ("in_major"); nn.Linear as
// (out, in). Both run through the strided GEMM without a transposed copy.
struct Linear {
  Floats w;
  Floats b;  // empty when unbiased
  int64_t in = 0, out = 0;
  bool in_major = false;
  std::vector<LoraAdapter> lora;
  Floats gw, gb;  // gradients (allocated when the base weights train)

  // y(M, out) (=|+=) x(M, in)·W + b + LoRA terms. With `saved`, LoRA intermediates are kept and
  // dropout (seeded by `seed`) is applied; without it, LoRA runs without dropout (inference).
  void apply(Backend& be, int64_t M, const float* x, int64_t ldx, float* y, int64_t ldy, bool accumulate,
             LinearSaved* saved = nullptr, uint64_t seed = 0) const;
  // Given dy(M, out): accumulates gw/gb (when allocated) and LoRA gradients, and dx(M, in) (=|+=).
  void backward(Backend& be, int64_t M, const float* x, int64_t ldx, const float* dy, int64_t lddy, float* dx,
                int64_t lddx, bool dx_accumulate, const LinearSaved* saved);
};

struct Layer {
  Floats norm1_w, norm1_b, norm2_w, norm2_b;  // biases only for LayerNorm
  Floats g_norm1_w, g_norm1_b, g_norm2_w, g_norm2_b;
  Linear qkv;   // (C) → [q (H·D) | k (K·D) | v (K·D)]
  Linear o;     // (H·D) → (C)
  Linear up;    // GPT-2: c_fc (C) → (F); LLaMA: [gate | up] (C) → (2F)
  Linear down;  // (F) → (C)
};

struct Weights {
  Floats tok_emb;  // (V, C)
  Floats pos_emb;  // (P, C), GPT-2 only
  std::vector<Layer> layers;
  Floats norm_w, norm_b;
  Floats head;  // (V, C) when untied; empty when tied to tok_emb
  Floats g_tok_emb, g_pos_emb, g_norm_w, g_norm_b, g_head;
  const float* head_ptr() const { return head.empty() ? tok_emb.data() : head.data(); }
};

// Keys and values of one sequence for every layer, filled position by position.
struct KVCache {
  int64_t capacity = 0;
  std::vector<Floats> k, v;  // per layer: (capacity, K·D)
  KVCache(const ModelConfig& c, int64_t cap);
};

// One sequence of a packed forward call: rows [row0, row0+len) of the batch hold its tokens at
// positions pos0.. ; with a cache, attention also sees positions [0, pos0) already cached.
struct SeqRun {
  int64_t row0 = 0, len = 0, pos0 = 0;
  KVCache* cache = nullptr;
  // When set, positions [0, pos0) of cache are copied from prefix_of, layer by layer, once this
  // pass has written them there: a continuation that shares its prefix with another run of the
  // same pass (the full and masked sequences of an IG pair).
  const KVCache* prefix_of = nullptr;
};

// Activations a training forward pass keeps for the backward pass.
struct LayerActs {
  Floats x_in, h1, mean1, rstd1;  // (T, C) block input, normed; per-row stats
  Floats qkv;                     // (T, qd + 2kd) after RoPE
  Floats lse;                     // (T, H) attention log-sum-exp per query and head
  Floats att;                     // (T, H·D) attention output
  Floats att_kept;                // last layer, trimmed: (Tk, H·D) attention output of the kept rows
  Floats x_mid, h2, mean2, rstd2;  // (T, C) after attention, normed; stats
  Floats ff;                      // (T, F or 2F) before the activation
  Floats act;                     // (T, F) after the activation
  LinearSaved s_qkv, s_o, s_up, s_down;
};

struct Acts {
  std::vector<LayerActs> layers;
  // When not empty: the rows (ascending) whose final hidden states the loss reads. The last layer's
  // attention output projection, MLP and final norm then run on these Tk rows only (every row's
  // keys and values still feed their attention), and the tail's activations below hold Tk rows.
  std::vector<int64_t> kept;
  Floats x_final, mean_f, rstd_f;  // (T or Tk, C) before the final norm; stats
  std::vector<int64_t> pos;
};

// A named view of one tensor: HF names for base weights (a slice of a fused buffer where the
// engine fused q/k/v or gate/up), PEFT names for LoRA adapters.
struct TensorRef {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;
  float* grad = nullptr;  // null when the tensor does not train
  bool decay = false;     // AdamW weight decay applies (≥ 2-D base weights)
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct AdamState {
  Floats m, v;
};

// Buffers reused from call to call (calls on one model are serialised), so a training step does
// not page-fault its way through fresh allocations every time.
struct Workspace {
  Floats x, h, qkv, att, ff, act, lse;                         // forward scratch
  Floats kept_att, kept_lse, kept_x, kept_h, kept_ff, kept_act;  // last layer, kept rows only
  Floats dh_kept, dx_kept, d_att_kept;  // backward of a trimmed last layer (Acts::kept)
  std::vector<Floats> scores;                                  // per thread
  Floats hidden, dh;                                           // training head
  Floats dx, tmp, d_act, d_ff, d_h, d_att, d_qkv;              // backward
  Acts acts;
  Floats ig_hidden, ig_logits, ig_head_rows;                   // IG scoring: all rows; a head chunk's logits and rows
  std::vector<std::unique_ptr<KVCache>> ig_caches;
  std::unique_ptr<PackedWeight> head;  // the LM head packed by the call that uses it (its memory kept between calls)
};

class PrefixStore;

class ModelImpl {
 public:
  Workspace ws;
  // Shared token prefixes between sequences and calls (prefix_cache.h); cleared when weights change.
  std::shared_ptr<PrefixStore> prefixes;
  ModelInfo info;
  Weights w;
  // The compute: every op, its threads, its matmul precision (backend/backend.h).
  std::unique_ptr<Backend> be;
  bool train_base = false;  // full fine-tuning: base weights have gradients
  // The device that runs IG scoring and hidden states (null: the CPU backend), and a count that
  // grows whenever the weights change, so the device knows its copy is stale.
  std::unique_ptr<DeviceCompute> device;
  uint64_t weights_version = 0;
  std::vector<TensorRef> registry;            // rebuilt whenever buffers change
  std::map<std::string, AdamState> adam;      // by tensor name
  int64_t adam_steps = 0;

  void rebuild_registry();
  const TensorRef& tensor(const std::string& name) const;

  // out(T, C): final-normed hidden states of all rows. With `acts`, activations are kept for
  // backward() and LoRA dropout is applied with `seed`. With `keep` (inference only: one range
  // [first, second) of run-local rows per run), out holds only those rows, run after run, and the
  // last layer computes just their queries, attention output and MLP (the other rows' keys and
  // values are still computed: the kept rows attend to them).
  void forward_hidden(const int32_t* tokens, int64_t T, const std::vector<SeqRun>& seqs, float* out,
                      Acts* acts = nullptr, uint64_t seed = 0, const std::vector<std::pair<int64_t, int64_t>>* keep = nullptr);
  // Backward from dh(T, C), the gradient of the final-normed hidden states; accumulates gradients.
  void backward(const int32_t* tokens, int64_t T, const std::vector<SeqRun>& seqs, Acts& acts, Floats& dh);
  // logits(M, V) = hidden(M, C) · headᵀ; with packed (from pack_head, used when not empty) the head
  // is not repacked on every call.
  void head_logits(int64_t M, const float* hidden, float* logits, const PackedWeight* packed = nullptr);
  // The head packed once (into the workspace) for many products with it.
  const PackedWeight* pack_head();
  // Runs fn(r0, r1) over row ranges in parallel.
  void parallel_rows(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
  // Row i of dst = row rows[i] of src (gather), or row rows[i] of dst = row i of src (scatter);
  // rows of `width` floats, back to back.
  void gather_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst);
  void scatter_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst);
};

std::unique_ptr<ModelImpl> model_impl_load(const std::string& dir, const LoadOptions& options);

// Where the architecture's checkpoint tensors live in the engine (weights.cpp).
// One Linear per layer and part, sized from the config: qkv (C → q + 2kv), o (q → C), up (C → F,
// or 2F when gated), down (F → C).
void shape_layers(const ModelConfig& c, Weights& w);
Linear& linear_of(Layer& L, Part p);
// The whole engine buffer a slot is part of (its parameter or its gradient), and where in that
// buffer the slot begins.
Floats& slot_buffer(Weights& w, const TensorSlot& s, bool grad = false);
int64_t slot_offset(Weights& w, const TensorSlot& s);

// What every block computes the same way whatever the family, as its traits say (forward.cpp).
// Token embeddings are multiplied by this (√C when the family scales them, else 1).
float embedding_scale(const ModelConfig& c);
// A norm's effective scale: its weight, or 1 + weight where the family says so (Gemma).
class NormWeight {
 public:
  NormWeight(const ArchTraits& a, const Floats& w);
  const float* data() const { return plus_.empty() ? w_ : plus_.data(); }

 private:
  const float* w_;
  Floats plus_;
};
// act(F) from ff (F, or [gate | up] 2F when gated): GELU (in place when act == ff), SwiGLU or GeGLU.
void mlp_activation(Backend& be, Activation a, const float* ff, int64_t F, float* act);
// d_ff (F or 2F) from d_act(F) and the pre-activation ff.
void mlp_activation_backward(Backend& be, Activation a, const float* ff, const float* d_act, int64_t F, float* d_ff);

// RoPE cos/sin tables (T, D) for the rows' positions: cos then sin of pos·θ^(−2i/D), i < D/2.
Floats rope_table(const ModelConfig& c, const std::vector<int64_t>& pos);

}  // namespace kpig
