// Causal attention of one head over one packed sequence, in query blocks through the GEMM:
// S = Q·Kᵀ·scale, P = softmax over keys ≤ query, O = P·V. Only a (block × keys) slice of S ever
// exists. The backward recomputes P from the saved log-sum-exp instead of storing it.
// Legend: n = tokens of the sequence, D = head dim; q/k/v/o rows have the given strides.
#pragma once
#include <cstdint>

namespace kpig {

// Scratch floats the calls below need for n keys.
int64_t attention_scratch_size(int64_t n);

// out(n, D) = softmax(q·kᵀ·scale, causal)·v for n queries at positions q_offset .. q_offset+n−1
// over keys 0 .. q_offset+n−1 (q rows of stride ldq; k, v rows of stride ldk, e.g. a KV cache);
// lse[i·lse_stride] = log Σ exp of query i's scores.
void attention_head_forward(const float* q, int64_t ldq, const float* k, const float* v, int64_t ldk, int64_t n,
                            int64_t q_offset, int64_t D, float scale, float* out, int64_t ldo, float* lse, int64_t lse_stride,
                            float* scratch);

// Given o (the forward output), d_out and lse: writes dq, accumulates dk and dv (rows of stride ld).
void attention_head_backward(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t D, float scale,
                             const float* o, int64_t ldo, const float* d_out, int64_t lddo, const float* lse,
                             int64_t lse_stride, float* dq, float* dk, float* dv, float* scratch);

}  // namespace kpig
