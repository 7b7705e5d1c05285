// Row-wise CPU kernels of the transformer forward pass. Each works on one row (or a row range);
// callers parallelise over rows. Compiled for AVX-512, AVX2 and plain x86-64, chosen at load time.
// Legend: C = hidden size, D = head dim, F = MLP width, V = vocabulary.
#pragma once
#include <cstdint>

namespace kpig {

// out(C) = (x − mean) / sqrt(var + eps) · w + b, biased variance (LayerNorm).
void layernorm_row(const float* x, const float* w, const float* b, float eps, int64_t C, float* out);
// out(C) = x · rsqrt(mean(x²) + eps) · w (RMSNorm).
void rmsnorm_row(const float* x, const float* w, float eps, int64_t C, float* out);
// x(n) ← gelu_new(x) = 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
void gelu_new_inplace(float* x, int64_t n);
// out(F) = silu(gate) · up, with gate_up(2F) = [gate | up] (SwiGLU).
void swiglu_row(const float* gate_up, int64_t F, float* out);
// Non-interleaved RoPE on n_heads heads of one row: dimension i pairs with i + D/2.
// cs holds cos(pos·inv_freq[i]) then sin(...), D/2 each, for this row's position.
void rope_row(float* x, int64_t n_heads, int64_t D, const float* cs);
// y(n) += x(n)
void add_inplace(float* y, const float* x, int64_t n);
// Causal attention of one query over n keys/values (rows of stride ld): out(D) = softmax(q·kᵀ·scale)·v.
// scores needs n floats of scratch.
void attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                float* scores, float* out);
// log Σ exp(x) over one row of V logits (max-shifted).
float logsumexp_row(const float* x, int64_t V);
// Index of the largest logit (first one on ties).
int64_t argmax_row(const float* x, int64_t V);

}  // namespace kpig
