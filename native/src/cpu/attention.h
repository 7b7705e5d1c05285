// Causal attention of one head over one packed sequence, in query blocks through the GEMM:
// S = Q·Kᵀ·scale, P = softmax over keys ≤ query, O = P·V. Only a (block × keys) slice of S ever
// exists. The backward recomputes P from the saved log-sum-exp instead of storing it.
// Legend: n = tokens of the sequence, D = head dim; q/k/v/o rows have the given strides.
#pragma once
#include <cstdint>

namespace kpig {

// Scratch floats the calls below need for a sequence of n tokens.
int64_t attention_scratch_size(int64_t n);

// out(n, D) = softmax(q·kᵀ·scale, causal)·v ; lse[i·lse_stride] = log Σ exp of row i's scores.
void attention_head_forward(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                            float* out, int64_t ldo, float* lse, int64_t lse_stride, float* scratch);

// Given o (the forward output), d_out and lse: writes dq, accumulates dk and dv (rows of stride ld).
void attention_head_backward(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                             const float* o, int64_t ldo, const float* d_out, int64_t lddo, const float* lse,
                             int64_t lse_stride, float* dq, float* dk, float* dv, float* scratch);

}  // namespace kpig
