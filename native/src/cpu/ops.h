// Row-wise CPU kernels of the transformer forward pass. Each works on one row (or a row range);
// callers parallelise over rows. Compiled for AVX-512, AVX2 and plain x86-64, chosen at load time.
// Legend: C = hidden size, D = head dim, F = MLP width, V = vocabulary.
#pragma once
#include <cstdint>

#include "../backend/backend.h"  // IgTokenStats

namespace kpig {

// out(C) = (x − mean) / sqrt(var + eps) · w + b, biased variance (LayerNorm); returns rstd, and the
// mean through *mean when given.
float layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out, float* mean = nullptr);
// out(C) = x · rsqrt(mean(x²) + eps) · w (RMSNorm); returns the rsqrt factor.
float rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out);
// LayerNorm backward for one row: dx (=) rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w, x̂ = (x − mean)·rstd;
// dw += dy·x̂ and db += dy (row-serial callers keep the sums deterministic).
void layernorm_backward_row(const float* x, const float* w, float mean, float rstd, const float* dy, int64_t C,
                            float* dx, float* dw, float* db);
// RMSNorm backward for one row: dx = r·g − x·r³·(Σ g·x)/C, g = dy·w; dw += dy·x·r.
void rmsnorm_backward_row(const float* x, const float* w, float r, const float* dy, int64_t C, float* dx, float* dw);
// d(gelu_new)(x)/dx · dy, into dx (n).
void gelu_new_backward(const float* x, const float* dy, int64_t n, float* dx);
// SwiGLU backward: given gate_up(2F) and dy(F), writes d[gate | up] (2F).
void swiglu_backward_row(const float* gate_up, const float* dy, int64_t F, float* d_gate_up);
// x(n) ← gelu_new(x) = 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
void gelu_new_inplace(float* x, int64_t n);
// out(F) = silu(gate) · up, with gate_up(2F) = [gate | up] (SwiGLU).
void swiglu_row(const float* gate_up, int64_t F, float* out);
// Non-interleaved RoPE on n_heads heads of one row: dimension i pairs with i + D/2.
// cs holds cos(pos·inv_freq[i]) then sin(...), D/2 each, for this row's position.
// With inverse = true it applies the transposed rotation (the backward of the forward one).
void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs, bool inverse = false);
// AdamW on n elements as torch.optim.AdamW computes it (decoupled decay first), then g = 0. Four
// lanes at a time (SSE, every x86-64 has it; the pass is memory-bound), each lane the scalar
// arithmetic of the tail, in the same order.
void adamw_update(float* __restrict p, float* __restrict g, float* __restrict m, float* __restrict v, int64_t n, float clip,
                  float decay, float b1, float b2, float step_size, float bc2_sqrt, float eps);
// y(n) += x(n)
void add_inplace(float* y, const float* x, int64_t n);
// Causal attention of one query over n keys/values (rows of stride ld): out(D) = softmax(q·kᵀ·scale)·v.
// scores needs n floats of scratch. Returns the log-sum-exp of the scaled scores.
float attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                 float* scores, float* out);
// log Σ exp(x) over one row of V logits (max-shifted).
float logsumexp_row(const float* x, int64_t V);
// x(n) ← scale · exp(x − shift)
void exp_shift_inplace(float* x, int64_t n, float shift, float scale);
// One attention row, unnormalised: s[j] ← exp(scale·s[j] − m) for j < valid with m = max_j scale·s[j]
// (scale > 0), s[valid, n) ← 0. Sets *m and returns Σ_j s[j].
float softmax_unnormalised_row(float* s, int64_t valid, int64_t n, float scale, float* m);
// Information-gain quantities of one response position from its full and masked logit rows:
// NLLs of y, KL(p‖q), JS(p, q) and both entropies, all in nats. One pass over the vocabulary after
// the two log-sum-exps.
IgTokenStats ig_token_stats(const float* lf, const float* lm, int64_t V, int32_t y);
// Index of the largest logit (first one on ties).
int64_t argmax_row(const float* x, int64_t V);

}  // namespace kpig
