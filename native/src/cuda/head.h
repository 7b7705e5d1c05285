// The streamed LM head of paired IG scoring on the GPU: only `chunk` row pairs of logits exist at a
// time (never tokens × vocabulary). For each chunk: the pairs' full and masked hidden rows are
// gathered side by side, their logits computed on the tensor cores (gemm_bf16), and every pair's
// NLLs, KL, JS and entropies taken from its two logit rows (rows.h).
// Legend: C = hidden, V = vocabulary, P = pairs.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace kpig::cuda {

// hidden(·, C): the rows that predict the response tokens; pair p reads rows full_row[p] and
// masked_row[p] and scores token y[p]. W(V, C) is the head. rows_buf needs 2·chunk·C floats and
// logits_buf 2·chunk·V; out(P, 6) gets the statistics (doubles, as ig_token_stats orders them).
cudaError_t ig_head(const float* hidden, const int64_t* full_row, const int64_t* masked_row, const int32_t* y, int64_t P, int64_t C,
                    const float* W, int64_t V, int64_t chunk, float* rows_buf, float* logits_buf, double* out, cudaStream_t stream);

}  // namespace kpig::cuda
