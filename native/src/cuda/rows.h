// CUDA kernels of the row ops (one thread block per row): with gemm.h, the first part of the CUDA
// backend. Device pointers in, device pointers out; every launcher
// runs on `stream` and returns its launch error. Each op computes what the CPU backend's op of the
// same name computes (native/src/backend/backend.h); native/tests/cuda_ops.cu holds them to it.
// Legend: R = rows, C = hidden, F = MLP width, D = head dim, V = vocabulary.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace kpig::cuda {

// out(R, C) = RMSNorm(x)·w (times 1 + w when plus_one); rstd(R) = the rsqrt factor of each row.
cudaError_t rmsnorm(const float* x, const float* w, float eps, bool plus_one, int64_t R, int64_t C, float* out, float* rstd,
                    cudaStream_t stream);
// out(R, C) = LayerNorm(x)·w + b (biased variance); mean(R), rstd(R) per row.
cudaError_t layernorm(const float* x, const float* w, const float* b, float eps, int64_t R, int64_t C, float* out, float* mean,
                      float* rstd, cudaStream_t stream);
// act(R, F) from ff(R, F) (gelu_tanh) or ff(R, 2F) = [gate | up] (swiglu: silu(gate)·up; geglu: gelu_tanh(gate)·up).
enum class Act : int { GeluTanh = 0, SwiGLU = 1, GeGLU = 2 };
cudaError_t mlp_activation(Act a, const float* ff, int64_t R, int64_t F, float* act, cudaStream_t stream);
// Non-interleaved RoPE on each row's n_heads heads: dimension i pairs with i + D/2; cs(R, D) holds
// cos then sin of each row's angles. inverse: the transposed rotation.
cudaError_t rope(float* x, int64_t R, int64_t row_stride, int64_t n_heads, int64_t D, const float* cs, bool inverse, cudaStream_t stream);
// AdamW as torch.optim.AdamW (decoupled decay first), then g = 0, on n elements.
cudaError_t adamw(float* p, float* g, float* m, float* v, int64_t n, float clip, float decay, float b1, float b2, float step_size,
                  float bc2_sqrt, float eps, cudaStream_t stream);
// Per row pair: NLLs of y[r], KL(p‖q), JS(p, q) and both entropies (nats) from the full and masked
// logit rows lf + r·stride and lm + r·stride (V each); out(R, 6) as doubles in that order.
cudaError_t ig_token_stats(const float* lf, const float* lm, int64_t stride, const int32_t* y, int64_t R, int64_t V, double* out,
                           cudaStream_t stream);

}  // namespace kpig::cuda

namespace kpig::cuda {

// Backward of rmsnorm (given its rstd): dx(R, C) (=) and, when dw is non-null, dw(C) += Σ_r dy·x·r
// (summed over rows in order: deterministic). plus_one as in rmsnorm.
cudaError_t rmsnorm_backward(const float* x, const float* w, bool plus_one, const float* rstd, const float* dy, int64_t R, int64_t C, float* dx,
                             float* dw, cudaStream_t stream);
// Backward of layernorm (given its mean and rstd): dx (=), dw += Σ dy·x̂, db += Σ dy when non-null.
cudaError_t layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, int64_t R, int64_t C,
                               float* dx, float* dw, float* db, cudaStream_t stream);
// Backward of mlp_activation: d_ff(R, F or 2F) (=) from d_act(R, F) and the pre-activation ff.
cudaError_t mlp_activation_backward(Act a, const float* ff, const float* d_act, int64_t R, int64_t F, float* d_ff, cudaStream_t stream);

}  // namespace kpig::cuda
