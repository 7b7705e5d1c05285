// The fused LM head + signed-weighted cross-entropy on the GPU, forward and backward, streamed over
// chunks of rows (only chunk × V logits exist at a time), as the CPU backend's fused_linear_ce:
//   loss_r = −log softmax(h_r·Wᵀ)[y_r],  dh_r = w_r·(softmax − onehot(y_r))·W,
//   gW += Σ_r w_r·(softmax − onehot(y_r))ᵀ·h_r.
// Legend: C = hidden, V = vocabulary, n = rows with a non-zero weight.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace kpig::cuda {

// Row i of the n reads hidden row rows[i], its target targets[i] and weight weights[i]. Writes
// dh[rows[i]] (other rows untouched), adds into gW (V, C) when non-null, and nll[i]. Buffers:
// hbuf and dhbuf chunk·C floats, logits chunk·V.
cudaError_t fused_linear_ce(const float* hidden, int64_t C, const float* W, int64_t V, const int64_t* rows, const int32_t* targets,
                            const float* weights, int64_t n, int64_t chunk, float* hbuf, float* logits, float* dhbuf, float* dh, float* gW,
                            double* nll, cudaStream_t stream);

}  // namespace kpig::cuda
