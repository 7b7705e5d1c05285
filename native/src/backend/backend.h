// The compute a model runs, behind one interface: model and training code (native/src/model/)
// call these entries and include no header of a backend. The CPU backend (native/src/cpu/,
// cpu_backend.cpp) is the reference: its ops are held to plain double-precision references on
// every ISA path (native/tests/test_ops.cpp), and any other backend is held to the same cases and
// to it. Its context (threads, matmul precision, packed weights) is its own business.
// Buffers are host memory for now; device-resident buffers are a device backend's first step.
// Legend: C = hidden, D = head dim, F = MLP width, V = vocabulary, n = rows or keys.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "../core/memory.h"

namespace kpig {

// One row of the fused weighted cross-entropy.
struct CeRow {
  int64_t row;     // row of `hidden` (and of `dh`)
  int32_t target;  // y_r
  float weight;    // w_r, any sign, non-zero
};

// Information-gain quantities of one response position from its full and masked logit rows:
// NLLs of y, KL(p‖q), JS(p, q) and both entropies, all in nats.
struct IgTokenStats {
  double nll_f, nll_m, kl, js, h_f, h_m;
};

// A weight prepared once for many products with it (the CPU packs it into GEMM panels; on AMX as
// bf16 pieces). Made by Backend::new_packed, filled by Backend::pack.
class PackedWeight {
 public:
  virtual ~PackedWeight() = default;
  virtual bool empty() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- context ----
  virtual int threads() const = 0;
  // fn(task, thread) for task in [0, n), on the backend's workers; thread indexes per-thread scratch.
  virtual void parallel_for(int64_t n, const std::function<void(int64_t task, int thread)>& fn) = 0;
  // bf16 matmuls (operands rounded to bfloat16, float32 accumulation) or float32 ones.
  virtual void set_matmul_bf16(bool on) = 0;
  virtual bool matmul_bf16() const = 0;
  // How float32 and bf16 matmuls run here (e.g. "avx512", "amx"), for ModelInfo.
  virtual const char* matmul_isa() const = 0;
  virtual const char* bf16_matmul_isa() const = 0;

  // ---- matmuls ----
  // C(M,N) (=|+=) A(M,K)·B(K,N) [+ bias(N)], operands by strides: A(i,k) = A[i·a_rs + k·a_cs].
  virtual void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t b_rs,
                    int64_t b_cs, float* C, int64_t ldc, bool accumulate, const float* bias = nullptr) = 0;
  virtual std::unique_ptr<PackedWeight> new_packed() = 0;
  // B(K,N) by strides, prepared for gemm_packed.
  virtual void pack(PackedWeight& out, int64_t K, int64_t N, const float* B, int64_t b_rs, int64_t b_cs) = 0;
  virtual void gemm_packed(int64_t M, const float* A, int64_t a_rs, int64_t a_cs, const PackedWeight& B, float* C, int64_t ldc,
                           bool accumulate) = 0;

  // ---- rows (one row each; callers run rows in parallel) ----
  virtual float layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out, float* mean = nullptr) = 0;
  virtual float rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out) = 0;
  virtual void layernorm_backward_row(const float* x, const float* w, float mean, float rstd, const float* dy, int64_t C, float* dx,
                                      float* dw, float* db) = 0;
  virtual void rmsnorm_backward_row(const float* x, const float* w, float r, const float* dy, int64_t C, float* dx, float* dw) = 0;
  virtual void gelu_tanh_inplace(float* x, int64_t n) = 0;
  virtual void gelu_tanh_backward(const float* x, const float* dy, int64_t n, float* dx) = 0;
  virtual void swiglu_row(const float* gate_up, int64_t F, float* out) = 0;
  virtual void swiglu_backward_row(const float* gate_up, const float* dy, int64_t F, float* d_gate_up) = 0;
  virtual void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs, bool inverse = false) = 0;
  virtual void add_inplace(float* y, const float* x, int64_t n) = 0;
  virtual float logsumexp_row(const float* x, int64_t V) = 0;
  virtual int64_t argmax_row(const float* x, int64_t V) = 0;
  virtual IgTokenStats ig_token_stats(const float* lf, const float* lm, int64_t V, int32_t y) = 0;
  virtual void adamw_update(float* p, float* g, float* m, float* v, int64_t n, float clip, float decay, float b1, float b2,
                            float step_size, float bc2_sqrt, float eps) = 0;

  // ---- attention (one head of one packed sequence) ----
  virtual int64_t attention_scratch_size(int64_t n) = 0;
  virtual void attention_head_forward(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldk, int64_t n,
                                      int64_t q_offset, int64_t D, float scale, float* out, int64_t ldo, float* lse, int64_t lse_stride,
                                      float* scratch) = 0;
  virtual void attention_head_backward(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                                       const float* o, int64_t ldo, const float* d_out, int64_t lddo, const float* lse,
                                       int64_t lse_stride, float* dq, float* dk, float* dv, float* scratch) = 0;
  // One query over n cached keys/values; returns the log-sum-exp.
  virtual float attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale, float* scores,
                           float* out) = 0;

  // ---- the LM head ----
  // Streamed over chunks of rows (cpu/head_stream.h): row(i) → hidden state; reduce per chunk.
  virtual void stream_head(int64_t n, int64_t chunk, int64_t C, int64_t V, const float* W, const PackedWeight* packed, Floats& hidden,
                           Floats& logits, const std::function<const float*(int64_t i)>& row,
                           const std::function<void(int64_t first, int64_t count, float* hidden, float* logits)>& reduce) = 0;
  // The fused head + signed-weighted cross-entropy, forward and backward (cpu/fused_ce.h).
  virtual void fused_linear_ce(const float* hidden, int64_t C, const float* W, int64_t V, const std::vector<CeRow>& rows, float* dh,
                               float* gW, double* nll, int64_t chunk = 256) = 0;
};

// The CPU backend with `threads` workers (0: every core this process may use).
std::unique_ptr<Backend> make_cpu_backend(int threads);

}  // namespace kpig
