// Internal state of a loaded model: float32 weights in Hugging Face layouts (fused where that
// saves a GEMM), the thread pool, and the packed forward pass shared by scoring and generation.
// Legend: T = tokens in a packed batch, C = hidden, V = vocab, H/K = query/kv heads, D = head dim.
#pragma once
#include <memory>
#include <vector>

#include "../../include/kpig/model.h"
#include "../core/threadpool.h"

namespace kpig {

// A linear layer y = x·W + b. GPT-2's Conv1D stores W as (in, out) ("in_major"); nn.Linear as
// (out, in). Both run through the strided GEMM without a transposed copy.
struct Linear {
  std::vector<float> w;
  std::vector<float> b;  // empty when unbiased
  int64_t in = 0, out = 0;
  bool in_major = false;
  // y(M, out) (=|+=) x(M, in)·W + b
  void apply(ThreadPool* pool, int64_t M, const float* x, int64_t ldx, float* y, int64_t ldy, bool accumulate) const;
};

struct Layer {
  std::vector<float> norm1_w, norm1_b, norm2_w, norm2_b;  // biases only for LayerNorm
  Linear qkv;   // (C) → [q (H·D) | k (K·D) | v (K·D)]
  Linear o;     // (H·D) → (C)
  Linear up;    // GPT-2: c_fc (C) → (F); LLaMA: [gate | up] (C) → (2F)
  Linear down;  // (F) → (C)
};

struct Weights {
  std::vector<float> tok_emb;  // (V, C)
  std::vector<float> pos_emb;  // (P, C), GPT-2 only
  std::vector<Layer> layers;
  std::vector<float> norm_w, norm_b;
  std::vector<float> head;  // (V, C) when untied; empty when tied to tok_emb
  const float* head_ptr() const { return head.empty() ? tok_emb.data() : head.data(); }
};

// Keys and values of one sequence for every layer, filled position by position.
struct KVCache {
  int64_t capacity = 0;
  std::vector<std::vector<float>> k, v;  // per layer: (capacity, K·D)
  KVCache(const ModelConfig& c, int64_t cap);
};

// One sequence of a packed forward call: rows [row0, row0+len) of the batch hold its tokens at
// positions pos0.. ; with a cache, attention also sees positions [0, pos0) already cached.
struct SeqRun {
  int64_t row0 = 0, len = 0, pos0 = 0;
  KVCache* cache = nullptr;
};

class ModelImpl {
 public:
  ModelInfo info;
  Weights w;
  std::unique_ptr<ThreadPool> pool;

  // out(T, C): final-normed hidden states of all rows.
  void forward_hidden(const int32_t* tokens, int64_t T, const std::vector<SeqRun>& seqs, float* out);
  // logits(M, V) = hidden(M, C) · headᵀ
  void head_logits(int64_t M, const float* hidden, float* logits);
  // Runs fn(r0, r1) over row ranges in parallel.
  void parallel_rows(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
};

std::unique_ptr<ModelImpl> model_impl_load(const std::string& dir, const LoadOptions& options);

}  // namespace kpig
