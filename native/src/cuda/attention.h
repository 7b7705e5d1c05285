// Causal attention over packed variable-length sequences on the GPU, forward: one warp per (query
// row, head), an online softmax over the keys of its own sequence up to itself (never a T × T
// score matrix), grouped-query heads. A first version on CUDA cores; the tensor-core tiled kernel
// replaces it behind the same call.
// Legend: T = packed rows, H/K = query/kv heads, D = head dim (≤ 256).
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace kpig::cuda {

// qkv(T, ld): row r holds q (H·D) then k (K·D) then v (K·D); start[r] is the first row of row r's
// sequence (each sequence starts at position 0). out(T, ldo) gets softmax(q·kᵀ·scale)·v per head,
// lse(T, H) the log-sum-exp of each row's scaled scores. Query head h reads kv head h / (H / K).
cudaError_t attention_forward(const float* qkv, int64_t ld, const int32_t* start, int64_t T, int64_t H, int64_t K, int64_t D, float scale,
                              float* out, int64_t ldo, float* lse, cudaStream_t stream);

// Backward of attention_forward, given its out and lse and d_out(T, lddo): dqkv(T, ld) (=) holds dq,
// dk and dv in qkv's layout. Deterministic (no atomics): dq by a warp per query row, dk and dv by a
// warp per key row summing over the rows after it and over its group of query heads. `end[r]` is
// one past the last row of row r's sequence.
cudaError_t attention_backward(const float* qkv, int64_t ld, const int32_t* start, const int32_t* end, int64_t T, int64_t H, int64_t K,
                               int64_t D, float scale, const float* out, int64_t ldo, const float* lse, const float* d_out, int64_t lddo,
                               float* dqkv, cudaStream_t stream);

}  // namespace kpig::cuda
